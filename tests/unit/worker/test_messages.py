"""The one message builder: what a template without a system role (Gemma-2) is sent, and how it is learned."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.support.fake_openai import FakeOpenAI, Status
from tests.unit.worker.support import RECORDED, TOKENIZE
from worker.server.chat_messages import MessageBuilder, probe_system_role
from worker.server.client import ModelClient
from worker.server.client_options import ClientOptions


def test_a_template_with_a_system_role_gets_the_conversation_as_is() -> None:
    messages = MessageBuilder(system_role=True).conversation("Be brief.", ["one", "two"], ["first"])
    assert messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "first"},
        {"role": "user", "content": "two"},
    ]


def test_without_a_system_role_the_system_text_leads_the_first_user_turn_only() -> None:
    messages = MessageBuilder(system_role=False).conversation(
        "Be brief.", ["one", "two"], ["first", "second"]
    )
    assert messages == [
        {"role": "user", "content": "Be brief.\n\none"},
        {"role": "assistant", "content": "first"},
        {"role": "user", "content": "two"},
        {"role": "assistant", "content": "second"},
    ]


@pytest.mark.parametrize("system_role", [True, False])
def test_two_turns_of_one_role_are_joined_so_roles_alternate(system_role: bool) -> None:
    # A re-ask after a blank reply appends a user turn right after the question.
    fitted = MessageBuilder(system_role=system_role).fit(
        [
            {"role": "system", "content": "S"},
            {"role": "user", "content": "question"},
            {"role": "user", "content": "that was blank"},
        ]
    )
    roles = [m["role"] for m in fitted if m["role"] != "system"]
    assert roles == ["user"]
    assert fitted[-1]["content"].endswith("question\n\nthat was blank")


def test_a_conversation_must_start_with_a_user_turn() -> None:
    with pytest.raises(ValueError, match="start with a user turn"):
        MessageBuilder().fit([{"role": "assistant", "content": "hi"}])


def test_a_conversation_cannot_carry_more_replies_than_questions() -> None:
    with pytest.raises(ValueError, match="cannot carry"):
        MessageBuilder().conversation(None, ["one"], ["a", "b"])


def probe(server: FakeOpenAI) -> MessageBuilder:
    async def go() -> MessageBuilder:
        async with ModelClient(
            ClientOptions(endpoint=server.base_url, model_name="tiny", max_retries=0)
        ) as client:
            return await probe_system_role(client)

    return asyncio.run(go())


def test_the_probe_learns_a_refused_system_role_from_vllms_real_400(server: FakeOpenAI) -> None:
    refusal = json.loads((RECORDED / "tokenize_system_role_refused.json").read_text())
    server.rule(
        lambda r: r.path == TOKENIZE and '"system"' in r.text,
        Status(400, refusal["error"]["message"]),
    )
    builder = probe(server)
    assert builder.system_merged_into_user is True
    assert "System role not supported" in builder.findings()["system_role_check"]


def test_the_probe_keeps_the_system_role_when_the_template_renders_it(server: FakeOpenAI) -> None:
    builder = probe(server)
    assert builder.findings() == {
        "system_merged_into_user": False,
        "system_role_check": "/tokenize rendered a system message",
    }


def test_a_400_for_any_conversation_is_not_mistaken_for_a_system_role_refusal(server: FakeOpenAI) -> None:
    server.rule(lambda r: r.path == TOKENIZE, Status(400, "broken template"))
    with pytest.raises(Exception, match="broken template"):
        probe(server)
