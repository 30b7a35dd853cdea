# hello_durable_flaky.py: the demo from the original duravoke README, unchanged in behaviour.
#
# send_email() "crashes the server" half of the time. Run this script again and again:
# every run resumes where the last one stopped, and an e-mail that was sent keeps the
# timestamp of the run that sent it (it is never sent twice). The state lives in
# ./duravoke_state.json, relative to the current directory.
import asyncio
import random
import time

from duravoke import Duravoke, JSONSerializer, PersistedKKV

kv = PersistedKKV("./duravoke_state.json")
duravoke = Duravoke(kv, JSONSerializer())


@duravoke.duravoke
async def send_email(user_id: int) -> str:
    if random.random() > 0.5:
        # Our Email API has a 50% chance of failing :(
        print("crash 🔥")
        quit()  # noqa: PLR1722 (the original demo's exit, kept as is)

    curr_time = round(time.time())
    return f"Sent email to user_id: {user_id} at {curr_time}"


@duravoke.duravoke
async def email_users(user_ids: list[int]) -> None:
    for user_id in user_ids:
        email_output = await send_email(user_id)
        print(email_output)
    print("finished 😎")


asyncio.run(email_users(list(range(10))))
