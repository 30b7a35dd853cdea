"""A web app whose signups finish even when the server is killed: FastAPI + duravoke.

``POST /signup`` starts an onboarding workflow and answers at once; the app runs a
long-lived :class:`duravoke.Runner` in its lifespan, which runs new workflows within
about a second and, after a crash or a deploy, finishes the ones that were cut short.
No start-up loop, no queue, no extra server.

    cd examples
    pip install fastapi uvicorn
    uvicorn fastapi_app:app
    curl -X POST localhost:8000/signup -H 'content-type: application/json' \\
        -d '{"email": "ann@example.com"}'
    curl localhost:8000/signup/ann@example.com

State goes to the default store ($DURAVOKE_HOME). Each step appends a line to
$SIGNUP_LOG (default ./signups.log), the side effect a real app would have.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

import duravoke

STEP_SECONDS = float(os.environ.get("SIGNUP_STEP_SECONDS", "0.02"))


def _log(line: str) -> None:
    fd = os.open(
        os.environ.get("SIGNUP_LOG", "signups.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600
    )
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@duravoke.duravoke(name="signup.step")
async def step(email: str, what: str) -> str:
    """One side effect of an onboarding (create the account, send an e-mail...)."""
    _log(f"exec {email} {what}")
    await anyio.sleep(STEP_SECONDS)  # a call to another service
    return f"{what} done"


@duravoke.duravoke(name="signup.onboarding")
async def onboarding(email: str) -> list[str]:
    """The workflow a signup starts."""
    return [
        await step(email, what)
        for what in ("create-account", "welcome-email", "add-to-crm", "notify-sales")
    ]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Run duravoke's runner for as long as the app runs."""
    async with duravoke.Runner(poll_interval=0.5):
        yield


app = FastAPI(lifespan=lifespan)


class Signup(BaseModel):
    """The signup form."""

    email: str


@app.post("/signup", status_code=202)
async def signup(form: Signup) -> dict[str, str]:
    """Start the onboarding (durably) and answer at once; the runner does the work."""
    workflow_id = await duravoke.start_as_async(f"signup:{form.email}", onboarding, form.email)
    return {"workflow_id": workflow_id}


@app.get("/signup/{email}")
async def signup_status(email: str) -> dict[str, str]:
    """How the onboarding of ``email`` stands."""
    try:
        info = await anyio.to_thread.run_sync(duravoke.get_workflow, f"signup:{email}")
    except duravoke.WorkflowNotFoundError:
        raise HTTPException(status_code=404, detail="no such signup") from None
    return {"status": info.status}


@app.get("/health")
async def health() -> dict[str, str]:
    """For load balancers (and the test that starts this server)."""
    return {"status": "ok"}


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app)
