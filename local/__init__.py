"""Local tools (server, demo, benchmark, throwaway Redis) and the Lambda harness the tests share with them."""
