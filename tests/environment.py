"""Loaded with `-p tests.environment` (see pyproject.toml) before pytest-django reads the settings:
keeps all state of a test run out of the checkout's var/ (each run gets its own folder, so runs can
go on side by side), and makes sure no test can reach a real model or real services by accident."""

import os
import tempfile

VAR = tempfile.mkdtemp(prefix="store-test-")
os.chmod(VAR, 0o711)  # the sandbox's unprivileged user must reach workspaces inside
os.environ["VAR_DIR"] = VAR
os.environ["REPLAY_PACE"] = "0"
os.environ["SCREENSHOTS"] = "false"  # tests that want pictures turn them on
os.environ["BROWSER_CHECK"] = "false"  # the same: tests of the browser check (and tests/agents/, which never
# read the settings) run it
for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_API_KEY_FILE", "AGENT_PROVIDER", "DATABASE_URL", "REDIS_URL",
             "PREVIEW_ORIGIN", "SLACK_WEBHOOK_URL", "SLACK_WEBHOOK_URL_FILE"):  # fmt: skip
    os.environ.pop(name, None)
# The suite runs on PostgreSQL only when asked to (scripts/test-postgres.sh): a developer's DATABASE_URL never
# leaks in. Django creates (and drops) its test_<name> database beside the one named here.
if os.environ.get("TEST_DATABASE_URL"):
    os.environ["DATABASE_URL"] = os.environ["TEST_DATABASE_URL"]
