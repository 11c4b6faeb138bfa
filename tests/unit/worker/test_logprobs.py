"""Reading real vLLM 0.32 log-prob bodies (worker.server.completions, worker.server.chat_completions),
and the arithmetic on them (worker.server.logprobs).

Bodies are the real ones in tests/fixtures/vllm-0.32 (copied from ../shared/reference/vllm-0.32). Where a
test needs a shape the recordings do not show (token-id keys, colliding text keys), it derives it from a
real body in code, so the rest of the body stays real.
"""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import pytest

from tests.unit.worker.support import RECORDED
from worker.errors import ResponseError
from worker.server import logprobs as lp
from worker.server.chat_completions import ChatCandidate, read_chat_reply
from worker.server.completions import read_completion


def body(name: str) -> dict[str, Any]:
    return json.loads((RECORDED / f"{name}.json").read_text(encoding="utf-8"))


def request(name: str) -> dict[str, Any]:
    return json.loads((RECORDED / f"{name}.request.json").read_text(encoding="utf-8"))


def top_by_token_id(body: dict[str, Any]) -> dict[int, float]:
    return read_completion(body).top_by_token_id()


def prompt_token_logprobs(body: dict[str, Any], prompts: list[list[int]]) -> list[list[float]]:
    return read_completion(body).prompt_token_logprobs(prompts)


def chat_top_candidates(body: dict[str, Any]) -> list[ChatCandidate]:
    return read_chat_reply(body).top_candidates()


def with_token_id_keys(reply: dict[str, Any], ids: dict[str, int]) -> dict[str, Any]:
    """The same body as if sent with return_tokens_as_token_ids (keys `token_id:<id>`)."""
    derived = copy.deepcopy(reply)
    top = derived["choices"][0]["logprobs"]["top_logprobs"][0]
    derived["choices"][0]["logprobs"]["top_logprobs"][0] = {f"token_id:{ids[k]}": v for k, v in top.items()}
    return derived


# ---- completions top_logprobs ---------------------------------------------------------------------------


def test_real_completions_top_logprobs_hold_n_plus_one_text_keyed_entries():
    # The pitfall itself, as vLLM 0.32 sent it: logprobs=5 gave 6 entries (the sampled " y" ranks below the
    # top 5 and is added), keyed by decoded text, one of them the empty string.
    reply = body("completions_logprobs5")
    assert request("completions_logprobs5")["logprobs"] == 5
    top = reply["choices"][0]["logprobs"]["top_logprobs"][0]
    assert len(top) == 6
    assert "" in top
    assert reply["choices"][0]["logprobs"]["tokens"] == [" y"]


def test_text_keyed_top_logprobs_are_refused_not_guessed():
    with pytest.raises(ResponseError, match="return_tokens_as_token_ids"):
        top_by_token_id(body("completions_logprobs5"))


def test_token_id_keys_give_every_candidate_including_the_sampled_one():
    reply = body("completions_logprobs5")
    ids = {" y": 900, " is": 626, "elp": 700, "bu": 701, "": 3, "ap": 702}
    top = top_by_token_id(with_token_id_keys(reply, ids))
    assert len(top) == 6
    assert top[900] == pytest.approx(-7.245673656463623, abs=0)
    assert top[626] == pytest.approx(-6.09218168258667, abs=0)


def test_colliding_text_keys_lose_a_candidate_but_token_id_keys_do_not():
    # Two byte-fallback tokens both decode to "": as text keys JSON keeps only the last one.
    reply = body("completions_logprobs5_seed")
    raw_text = json.dumps(reply).replace('"ible": -6.495785236358643', '"": -6.6')
    collided = json.loads(raw_text)["choices"][0]["logprobs"]["top_logprobs"][0]
    assert len(collided) == 5  # six candidates were sent, one was silently lost
    ids = {"world": 10, ":": 11, " whole": 12, " lot": 13, "": 14, "ible": 15}
    top = top_by_token_id(with_token_id_keys(reply, ids))
    assert len(top) == 6


def test_malformed_token_id_key_is_an_error():
    with pytest.raises(ResponseError, match="does not end in a token id"):
        lp.parse_token_id_key("token_id:x")
    assert lp.parse_token_id_key("token_id:867") == 867


def test_missing_logprobs_is_a_response_error():
    reply = body("completions_logprobs5")
    reply["choices"][0]["logprobs"] = None
    with pytest.raises(ResponseError, match="no logprobs"):
        top_by_token_id(reply)


def test_missing_choices_is_a_response_error():
    with pytest.raises(ResponseError, match="no choices"):
        top_by_token_id({"choices": []})


# ---- impossible values ---------------------------------------------------------------------------------


def test_minus_9999_is_probability_zero():
    assert lp.clean_logprob(-9999.0, "x") == -math.inf
    assert lp.clean_logprob(-12000.5, "x") == -math.inf
    assert lp.to_probability(-9999.0) == 0.0
    assert lp.to_probability(-math.inf) == 0.0
    assert lp.clean_logprob(-9998.0, "x") == -9998.0


@pytest.mark.parametrize("value", [0.5, "nan", None, True, float("nan")])
def test_non_logprob_values_are_response_errors(value):
    with pytest.raises(ResponseError, match="at here"):
        lp.clean_logprob(value, "here")


def test_float_noise_above_zero_is_clamped_to_zero():
    assert lp.clean_logprob(4e-7, "x") == 0.0


# ---- prompt_logprobs (echo) -------------------------------------------------------------------------


def test_prompt_logprobs_of_the_real_echo_body():
    reply = body("completions_echo_prompt_logprobs")
    # "the cat is red": the ids of tokens 2-4 are the prompt_logprobs keys; the first token is never scored.
    prompt = [981, 701, 626, 791]
    (values,) = prompt_token_logprobs(reply, [prompt])
    assert values == [0.0, -7.13860559463501, -6.9631123542785645, -7.030024528503418]
    # The same numbers appear in the echoed text logprobs: both views of one computation.
    assert values[1:] == reply["choices"][0]["logprobs"]["token_logprobs"][1:4]


def test_prompt_logprobs_that_do_not_hold_the_sent_token_are_an_error():
    reply = body("completions_echo_prompt_logprobs")
    with pytest.raises(ResponseError, match="do not include the token 702"):
        prompt_token_logprobs(reply, [[981, 702, 626, 791]])


@pytest.mark.parametrize(
    ("prompts", "message"),
    [
        ([[1, 2, 3, 4], [1, 2, 3, 4]], "1 choices for 2 prompts"),
        ([[981, 701, 626]], "aligned with its 3 prompt tokens"),
    ],
    ids=["more-prompts-than-choices", "a-prompt-of-another-length"],
)
def test_prompt_logprobs_must_align_with_prompts(prompts: list[list[int]], message: str) -> None:
    with pytest.raises(ResponseError, match=message):
        prompt_token_logprobs(body("completions_echo_prompt_logprobs"), prompts)


def test_batched_choices_are_matched_by_index_not_by_order():
    reply = body("completions_echo_prompt_logprobs")
    first = reply["choices"][0]
    second = copy.deepcopy(first)
    second["index"] = 1
    second["prompt_logprobs"][3] = {"5": {"logprob": -9999.0, "rank": 1000, "decoded_token": "x"}}
    reply["choices"] = [second, first]  # the server may send them in any order
    values = prompt_token_logprobs(reply, [[981, 701, 626, 791], [981, 701, 626, 5]])
    assert values[0][3] == -7.030024528503418
    assert values[1][3] == -math.inf


# ---- chat top_logprobs -------------------------------------------------------------------------------


def test_real_chat_top_logprobs_list():
    assert request("chat_logprobs_top5")["top_logprobs"] == 5
    candidates = chat_top_candidates(body("chat_logprobs_top5"))
    assert [c.text for c in candidates] == ["nment", "<|assistant|>", " friend", "B", "parent"]
    assert candidates[0].logprob == -6.696820259094238


def test_chat_token_text_comes_from_bytes():
    reply = body("chat_logprobs_top5")
    top = reply["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
    top[3] = {"token": "bytes:\\xc3", "logprob": -7.0, "bytes": [195]}  # half of "é"
    top[4] = {"token": "Yes", "logprob": -7.5, "bytes": [32, 89, 101, 115]}
    candidates = chat_top_candidates(reply)
    assert candidates[3].text == "\ufffd"
    assert candidates[4].text == " Yes"


# ---- arithmetic -------------------------------------------------------------------------------------


def test_logsumexp_hand_computed():
    assert lp.logsumexp([math.log(0.2), math.log(0.3)]) == pytest.approx(math.log(0.5), abs=1e-15)
    assert lp.logsumexp([]) == -math.inf
    assert lp.logsumexp([-math.inf, math.log(0.25)]) == pytest.approx(math.log(0.25), abs=1e-15)
    # No underflow: exp(-1000) is 0.0 in floats, the log of the sum is not.
    assert lp.logsumexp([-1000.0, -1000.0]) == pytest.approx(-1000.0 + math.log(2), abs=1e-12)


def test_distribution_raw_coverage_and_renormalised():
    dist = lp.distribution({"yes": math.log(0.2), "no": math.log(0.3)})
    assert dist.raw == pytest.approx({"yes": 0.2, "no": 0.3}, abs=1e-15)
    assert dist.coverage == pytest.approx(0.5, abs=1e-15)
    assert dist.normalised == pytest.approx({"yes": 0.4, "no": 0.6}, abs=1e-15)


def test_distribution_with_an_impossible_option():
    dist = lp.distribution({"a": math.log(0.1), "b": -math.inf, "c": math.log(0.3)})
    assert dist.normalised == pytest.approx({"a": 0.25, "b": 0.0, "c": 0.75}, abs=1e-15)


def test_distribution_of_far_tail_options_still_sums_to_one():
    dist = lp.distribution({"a": -1000.0, "b": -1001.0})
    assert dist.coverage == 0.0  # raw probabilities underflow...
    assert dist.normalised["a"] == pytest.approx(1 / (1 + math.exp(-1)), abs=1e-12)  # ...their ratio does not
    assert math.fsum(dist.normalised.values()) == pytest.approx(1.0, abs=1e-12)


def test_distribution_with_no_mass_is_undefined_not_uniform():
    dist = lp.distribution({"a": -math.inf, "b": -math.inf})
    assert dist.coverage == 0.0
    assert all(math.isnan(p) for p in dist.normalised.values())
    assert math.isnan(lp.entropy_bits(dist.normalised.values()))


@pytest.mark.parametrize(
    ("probabilities", "bits"),
    [([0.25] * 4, 2.0), ([1.0, 0.0], 0.0), ([0.5, 0.25, 0.25], 1.5), ([1 / 11] * 11, math.log2(11))],
)
def test_entropy_hand_computed(probabilities, bits):
    assert lp.entropy_bits(probabilities) == pytest.approx(bits, abs=1e-12)


def test_mean_and_std_hand_computed():
    bins = [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    probs = [0.5] + [0.0] * 9 + [0.5]
    assert lp.mean_and_std(bins, probs) == pytest.approx((50.0, 50.0), abs=1e-12)
    # Uniform over 0..3: mean 1.5, variance (2.25 + 0.25 + 0.25 + 2.25) / 4 = 1.25.
    assert lp.mean_and_std([0, 1, 2, 3], [0.25] * 4) == pytest.approx((1.5, math.sqrt(1.25)), abs=1e-12)
    # All mass on 30%: no spread.
    assert lp.mean_and_std(bins, [0, 0, 0, 1.0, 0, 0, 0, 0, 0, 0, 0]) == pytest.approx((30.0, 0.0), abs=0)


def test_mean_and_std_of_an_undefined_distribution_is_nan():
    mean, std = lp.mean_and_std([0, 1], [math.nan, math.nan])
    assert math.isnan(mean)
    assert math.isnan(std)
    with pytest.raises(ValueError, match="2 values but 1"):
        lp.mean_and_std([0, 1], [1.0])
