"""Onboarding: a welcome e-mail, a wait for the user's confirmation, then tips after a delay.

The two waits small apps need most: "wait until the user clicks the confirmation link, at
most a day" (``duravoke.receive`` with a timeout) and "send a follow-up three days later"
(``duravoke.sleep``). Under a runner, neither holds anything while it waits: the
workflow is suspended (``duravoke list`` shows it ``waiting`` or ``sleeping``) and a
later pass resumes it. State goes to the default store ($DURAVOKE_HOME).

    cd examples
    python onboarding.py signup ann@example.com    # start her onboarding (nothing runs yet)
    python onboarding.py run                       # a runner, until Ctrl-C (or use cron:
                                                   #   duravoke resume --import onboarding)
    python onboarding.py confirm ann@example.com   # she clicked the link: send the message

E-mails are "sent" by appending a JSON line to $ONBOARDING_OUTBOX (default
./outbox.jsonl), with the step's idempotency key, as a real e-mail API would receive it.
$ONBOARDING_CONFIRM_SECONDS and $ONBOARDING_TIPS_SECONDS shorten the waits for a demo.
"""

from __future__ import annotations

import json
import os
import sys

import duravoke

CONFIRM_WITHIN = float(os.environ.get("ONBOARDING_CONFIRM_SECONDS", "86400"))  # a day
TIPS_AFTER = float(os.environ.get("ONBOARDING_TIPS_SECONDS", "259200"))  # three days


@duravoke.duravoke(name="onboarding.send_email")
def send_email(to: str, template: str) -> str:
    """Send one e-mail; the idempotency key lets the e-mail API drop a repeat."""
    key = duravoke.idempotency_key()
    line = json.dumps({"to": to, "template": template, "key": key})
    fd = os.open(
        os.environ.get("ONBOARDING_OUTBOX", "outbox.jsonl"),
        os.O_WRONLY | os.O_APPEND | os.O_CREAT,
        0o600,
    )
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)
    return key


@duravoke.duravoke(name="onboarding.onboard")
def onboard(email: str) -> str:
    """The onboarding workflow of one user."""
    send_email(email, "welcome")
    confirmation = duravoke.receive("confirmed", timeout=CONFIRM_WITHIN)
    if confirmation is None:
        send_email(email, "please-confirm")
        return "unconfirmed"
    duravoke.sleep(TIPS_AFTER)
    send_email(email, "tips")
    return "onboarded"


def workflow_id(email: str) -> str:
    """The workflow id of a user's onboarding: known to the confirmation link handler."""
    return f"onboarding:{email}"


def signup(email: str) -> str:
    """Start the user's onboarding; returns at once (a runner does the rest)."""
    return duravoke.start_as(workflow_id(email), onboard, email)


def confirm(email: str) -> None:
    """The user clicked the confirmation link."""
    duravoke.send(workflow_id(email), "confirmed", {"email": email})


def main(argv: list[str]) -> int:
    """The command line; see the module docstring."""
    if argv[:1] == ["signup"] and len(argv) == 2:
        print(signup(argv[1]))
    elif argv[:1] == ["confirm"] and len(argv) == 2:
        confirm(argv[1])
    elif argv == ["run"]:
        runner = duravoke.Runner(poll_interval=0.2)
        try:
            runner.run()
        except KeyboardInterrupt:
            runner.stop()
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
