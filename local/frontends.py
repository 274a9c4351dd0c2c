"""Add a frontend, or give one a new token: the token is minted here and shown once; only its SHA-256 is kept.

With --secret-arn the frontends JSON in that Secrets Manager secret (AUTH_SECRET_ARN of the deployment) is
read, changed and written back as a new version (deployed functions pick it up within seconds); without it
the entry is printed, for AUTH_FRONTENDS or a secret you edit yourself.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from collections.abc import Sequence
from typing import Any

from local.lambda_harness import ROOT

sys.path.insert(0, str(ROOT / "layers" / "room_history"))

from room_history.access import parse_frontends, token_sha256  # noqa: E402
from room_history.errors import AccessMisconfigured  # noqa: E402

TOKEN_BYTES = 32  # 256 bits of entropy, 43 URL-safe characters


class FrontendError(Exception):
    """The command cannot do what was asked; the message is one line for the operator."""


def mint_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def added(document: dict[str, Any], name: str, rooms: list[str], token: str) -> dict[str, Any]:
    """The frontends document with a new frontend `name`; refuses a name already there."""
    if any(entry.get("name") == name for entry in document["frontends"]):
        raise FrontendError(f"a frontend named {name!r} exists already; give it a new token with `rotate`")
    entry = {"name": name, "token_sha256": token_sha256(token), "rooms": rooms}
    return _checked({"frontends": [*document["frontends"], entry]})


def rotated(document: dict[str, Any], name: str, token: str) -> dict[str, Any]:
    """The frontends document with `name`'s token hash replaced (its old token stops working)."""
    entries = [dict(entry) for entry in document["frontends"]]
    matching = [entry for entry in entries if entry.get("name") == name and "token_sha256" in entry]
    if not matching:
        raise FrontendError(f"no token frontend named {name!r} in the secret")
    for entry in matching:
        entry["token_sha256"] = token_sha256(token)
    return _checked({"frontends": entries})


def _checked(document: dict[str, Any]) -> dict[str, Any]:
    try:
        parse_frontends(document, "frontends")
    except AccessMisconfigured as error:
        raise FrontendError(str(error)) from None
    return document


def read_secret(client, arn: str) -> dict[str, Any]:
    """The secret's frontends document; an empty secret (or one without a value yet) has no frontends."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        text = client.get_secret_value(SecretId=arn).get("SecretString") or ""
    except ClientError as error:
        if error.response["Error"]["Code"] == "ResourceNotFoundException" and "secret value" in error.response[
            "Error"
        ].get("Message", ""):
            text = ""  # created without a value
        else:
            raise FrontendError(f"cannot read the secret {arn}: {error}") from None
    except BotoCoreError as error:  # no credentials, no region
        raise FrontendError(f"cannot read the secret {arn}: {error}") from None
    if not text.strip():
        return {"frontends": []}
    try:
        document = json.loads(text)
    except ValueError:
        raise FrontendError(f"the secret {arn} does not hold JSON; fix or empty it first") from None
    try:
        parse_frontends(document, "the secret")
    except AccessMisconfigured as error:
        raise FrontendError(str(error)) from None
    return document


def write_secret(client, arn: str, document: dict[str, Any]) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client.put_secret_value(SecretId=arn, SecretString=json.dumps(document, indent=1))
    except (BotoCoreError, ClientError) as error:
        raise FrontendError(f"cannot write the secret {arn}: {error}") from None


def main(argv: Sequence[str] | None = None, client=None) -> int:
    parser = argparse.ArgumentParser(
        prog="./dev frontend", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add", help="add a frontend with a new token")
    add.add_argument("name", help="the frontend's name, e.g. discord-bot")
    add.add_argument("rooms", nargs="+", help="room ids or prefixes ending in *, e.g. 'discord:*' (quote it)")
    add.add_argument("--secret-arn", help="the deployment's AUTH_SECRET_ARN; without it the entry is printed")
    rotate = commands.add_parser("rotate", help="give a frontend of the secret a new token")
    rotate.add_argument("name")
    rotate.add_argument("--secret-arn", required=True)
    args = parser.parse_args(argv)

    token = mint_token()
    try:
        if args.secret_arn is None:
            entry = added({"frontends": []}, args.name, args.rooms, token)["frontends"][0]
            print("Add this entry to the frontends JSON (AUTH_FRONTENDS or the AUTH_SECRET_ARN secret):")
            print(json.dumps(entry))
        else:
            if client is None:
                import boto3

                client = boto3.client("secretsmanager")
            document = read_secret(client, args.secret_arn)
            if args.command == "add":
                document = added(document, args.name, args.rooms, token)
            else:
                document = rotated(document, args.name, token)
            write_secret(client, args.secret_arn, document)
            done = "added to" if args.command == "add" else "given a new token in"
            print(f"Frontend {args.name!r} {done} {args.secret_arn}; deployed functions use it within seconds.")
    except FrontendError as error:
        print(f"./dev frontend: {error}", file=sys.stderr)
        return 1
    print(f"Token (shown once, only its hash is stored): {token}")
    print(f"Frontends send it as: Authorization: Bearer {token}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
