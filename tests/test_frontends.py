"""./dev frontend (local/frontends.py) against Secrets Manager faked by moto, and its tokens through the API."""

from __future__ import annotations

import hashlib
import json
import re

from local import frontends
from support import Api, room_path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    status = frontends.main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def printed_token(out: str) -> str:
    return re.search(r"Token \(shown once, only its hash is stored\): (\S+)", out).group(1)


def test_without_a_secret_the_entry_is_printed(capsys):
    status, out, _ = run(capsys, "add", "discord-bot", "discord:*", "matrix:!ops")
    token = printed_token(out)
    entry = json.loads(out.splitlines()[1])
    assert status == 0 and len(token) >= 43  # 32 random bytes
    assert entry == {
        "name": "discord-bot",
        "token_sha256": hashlib.sha256(token.encode()).hexdigest(),
        "rooms": ["discord:*", "matrix:!ops"],
    }
    assert printed_token(run(capsys, "add", "discord-bot", "discord:*")[1]) != token  # a new token every time


def test_add_and_rotate_in_the_secret(single_backend, aws, capsys):
    arn = aws.create_secret(Name="room-history/frontends")["ARN"]  # created without a value, as the stack does
    status, out, _ = run(capsys, "add", "discord-bot", "discord:*", "--secret-arn", arn)
    token = printed_token(out)
    stored = aws.get_secret_value(SecretId=arn)["SecretString"]
    assert status == 0 and token not in stored
    assert json.loads(stored) == {
        "frontends": [
            {"name": "discord-bot", "token_sha256": hashlib.sha256(token.encode()).hexdigest(), "rooms": ["discord:*"]}
        ]
    }

    status, out, _ = run(capsys, "add", "matrix-bot", "matrix:*", "--secret-arn", arn)
    matrix_token = printed_token(out)
    assert status == 0 and [
        f["name"] for f in json.loads(aws.get_secret_value(SecretId=arn)["SecretString"])["frontends"]
    ] == ["discord-bot", "matrix-bot"]

    api = Api({**single_backend.env, "AUTH_FRONTENDS": "", "AUTH_SECRET_ARN": arn})
    assert api.call("GET", room_path("discord:1"), token=token).status == 200
    assert api.call("GET", room_path("matrix:1"), token=token).status == 403
    assert api.call("GET", room_path("matrix:1"), token=matrix_token).status == 200

    status, out, err = run(capsys, "add", "discord-bot", "slack:*", "--secret-arn", arn)
    assert status == 1 and "exists already" in err and "Token" not in out

    status, out, _ = run(capsys, "rotate", "discord-bot", "--secret-arn", arn)
    new_token = printed_token(out)
    assert status == 0 and new_token != token
    fresh = Api({**single_backend.env, "AUTH_FRONTENDS": "", "AUTH_SECRET_ARN": arn})
    assert fresh.call("GET", room_path("discord:1"), token=new_token).status == 200
    assert fresh.call("GET", room_path("discord:1"), token=token).status == 401
    assert fresh.call("GET", room_path("matrix:1"), token=matrix_token).status == 200


def test_mistakes_are_one_line(aws, capsys):
    arn = aws.create_secret(Name="garbage", SecretString="not json")["ARN"]
    status, out, err = run(capsys, "add", "a", "*", "--secret-arn", arn)
    assert status == 1 and err.startswith("./dev frontend: the secret") and "Traceback" not in err and not out
    status, _, err = run(capsys, "rotate", "nobody", "--secret-arn", arn.replace("garbage", "missing"))
    assert status == 1 and "cannot read the secret" in err
    aws.create_secret(Name="empty", SecretString=json.dumps({"frontends": []}))
    status, _, err = run(capsys, "rotate", "nobody", "--secret-arn", "empty")
    assert status == 1 and "no token frontend named 'nobody'" in err
    assert aws.get_secret_value(SecretId="empty")["SecretString"] == json.dumps({"frontends": []})
