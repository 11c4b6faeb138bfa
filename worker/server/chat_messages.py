"""Chat messages for every pipeline: one builder that every chat template accepts.

Some chat templates refuse conversations others accept. Gemma-2's raises "System role not supported" for a
system message and "Conversation roles must alternate user/assistant/user/assistant/..." for two user turns
in a row; vLLM answers both with HTTP 400, so a pipeline that sends them gets no answer at all. Every
pipeline therefore builds its messages here:

- `probe_system_role` asks the server ONCE per run, before the first row, whether its template takes a
  system message: `POST /tokenize` renders a system + user conversation with the real template, without
  generating anything. A 400 there, while the same conversation without the system turn renders, means
  the template refuses the role. A server without `/tokenize` (a hosted API) is assumed to take it.
- `MessageBuilder.fit` then makes any conversation safe for that template: without a system role the
  system text leads the first user turn (separated by a blank line); consecutive turns of one role are
  joined into one, so user and assistant strictly alternate and the conversation starts with a user turn.

What was learned is recorded in every meta file (`system_merged_into_user`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from worker.errors import RequestRejected
from worker.server.client import ModelClient
from worker.server.tokenization import TOKENIZE_PATH, read_tokens, tokenize_request

__all__ = ["MessageBuilder", "probe_system_role"]
# Between the system text and the first user turn, and between two turns of one role that are joined.
TURN_JOINER = "\n\n"
# A fixed conversation for the probe: only whether it renders matters.
PROBE_SYSTEM = "Answer briefly."
PROBE_USER = "Say yes."

Message = dict[str, str]


@dataclass(frozen=True)
class MessageBuilder:
    """Turns a study's conversation into messages the server's chat template accepts."""

    system_role: bool = True  # False: the template refuses a system message (Gemma-2)
    evidence: str = "not probed"  # how system_role was learned, for the meta file

    @property
    def system_merged_into_user(self) -> bool:
        return not self.system_role

    def conversation(
        self, system: str | None, users: Sequence[str], replies: Sequence[str] = ()
    ) -> list[Message]:
        """System (if any), then user turn i followed by reply i for every reply given.

        `replies` holds the assistant's answers so far: one fewer than `users` to ask the next question,
        as many to record the finished conversation.
        """
        if not len(users) - 1 <= len(replies) <= len(users):
            raise ValueError(f"{len(users)} user turns cannot carry {len(replies)} replies")
        messages: list[Message] = [{"role": "system", "content": system}] if system else []
        for index, user in enumerate(users):
            messages.append({"role": "user", "content": user})
            if index < len(replies):
                messages.append({"role": "assistant", "content": replies[index]})
        return self.fit(messages)

    def fit(self, messages: Sequence[Mapping[str, str]]) -> list[Message]:
        """The same conversation in a form the template accepts (see the module docstring)."""
        system = [m["content"] for m in messages if m["role"] == "system"]
        turns = [{"role": m["role"], "content": m["content"]} for m in messages if m["role"] != "system"]
        if any(m["role"] not in {"user", "assistant"} for m in turns):
            raise ValueError("a conversation holds only system, user and assistant messages")
        if not turns or turns[0]["role"] != "user":
            raise ValueError("a conversation must start with a user turn after the system text")
        joined: list[Message] = []
        for turn in turns:
            if joined and joined[-1]["role"] == turn["role"]:
                joined[-1] = {
                    "role": turn["role"],
                    "content": joined[-1]["content"] + TURN_JOINER + turn["content"],
                }
            else:
                joined.append(turn)
        system_text = TURN_JOINER.join(system)
        if not system_text:
            return joined
        if self.system_role:
            return [{"role": "system", "content": system_text}, *joined]
        first, *rest = joined
        return [{"role": "user", "content": system_text + TURN_JOINER + first["content"]}, *rest]

    def findings(self) -> dict[str, Any]:
        """The meta file's record of the choice."""
        return {"system_merged_into_user": self.system_merged_into_user, "system_role_check": self.evidence}


async def probe_system_role(client: ModelClient) -> MessageBuilder:
    """Learn from the server's own chat template whether it takes a system message."""
    with_system = [{"role": "system", "content": PROBE_SYSTEM}, {"role": "user", "content": PROBE_USER}]
    try:
        await _render(client, with_system)
    except RequestRejected as err:
        if err.fatal:
            raise
        if err.status == 404:
            return MessageBuilder(
                system_role=True, evidence=f"assumed: the server has no {TOKENIZE_PATH} to ask"
            )
        if err.status != 400:
            raise
        # The template refused something: make sure it was the system role, not the probe as a whole.
        await _render(client, with_system[1:])
        return MessageBuilder(
            system_role=False,
            evidence=f"{TOKENIZE_PATH} refused a system message ({err.message}); the user turn alone renders",
        )
    return MessageBuilder(system_role=True, evidence=f"{TOKENIZE_PATH} rendered a system message")


async def _render(client: ModelClient, messages: list[Message]) -> None:
    await client.post_json(
        TOKENIZE_PATH, tokenize_request(client.options.model_name, messages), expect=read_tokens
    )
