"""The fintech example: scenarios, prompt items and the three-channel reward."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import subprocess
import sys
from collections import Counter
from datetime import date

import numpy as np
import pytest

from multireward_grpo.examples.fintech import (
    CHANNEL_NAMES,
    EVAL_SEED,
    PERSONAS,
    SCENARIO_TYPES,
    SYSTEM_PROMPT,
    FintechRewardConfig,
    FintechRewardFunction,
    Scenario,
    find_violations,
    is_truncated,
    make_eval_set,
    make_fintech_prompts,
    make_scenarios,
    politeness_markers,
    reward_action,
    reward_compliance,
    reward_length,
    reward_politeness,
    scenario_to_prompt,
    score_response,
)

THIRD, TWO_THIRDS = 1 / 3, 2 / 3

# (reply, scenario_type or None, compliance, politeness_gated, action, reason)
CASES = [
    (("Hi Maria, thank you so much for reaching out. I've opened a dispute for the $45.00 charge and you'll "
     "hear back within 10 business days."), None, 1, TWO_THIRDS, 1,
     "greeting + one thanks phrase; a performed action"),
    ("Thank you so much for your patience.", None, 1, THIRD, 0,
     "overlap: 'thank you so much for your patience' counts once, not also 'thank you'"),
    ("Hello Wei, we guarantee you will get your money back.", None, 0, 0, 0,
     "promising an outcome; the gate zeroes politeness"),
    ("I'm sorry for the trouble. We cannot guarantee the outcome, but I've filed a dispute, reference DSP-20417.",
     None, 1, THIRD, 1, "negated guarantee is fine"),
    ("I understand. There are no guarantees with merchant refunds, but I've opened a dispute for you.",
     None, 1, THIRD, 1, "'no guarantees' is negated"),
    ("We can't promise that, but we guarantee a refund.", None, 0, 0, 0,
     "'but' starts a new clause, so the second guarantee is not negated"),
    ("Hi James, please provide your account number so I can check.", None, 0, 0, 0,
     "asking for the account number"),
    ("Hi James, your account is up to date. You can view your statements in the app under Accounts > Statements.",
     None, 1, THIRD, 1, "merely mentioning 'your account' is fine"),
    ("Thanks for waiting. Please reply with your routing number and I'll confirm the wire.", None, 0, 0, 0.5,
     "asking for the routing number; action does not depend on compliance"),
    ("Thank you for your patience. I've opened a dispute and you can track it in the app under", None, 1, THIRD, 0,
     "cut off: no terminal punctuation"),
    ("I'm sorry to hear that. I've opened a dispute and", None, 1, THIRD, 0, "cut off after a connector"),
    ("I've updated your address and the rest of the.", None, 1, 0, 0, "a period after a dangling 'the'"),
    ("You can dispute the charge...", None, 1, 0, 0, "trailing off with an ellipsis"),
    ("Hello! Please don't hesitate to send your account number.", None, 0, 0, 0,
     "'don't hesitate to' is not a negation"),
    ("Please never share your PIN with anyone. I've frozen your card in the meantime.", None, 1, THIRD, 1,
     "a warning about the PIN is not a request"),
    ("We will never ask you for your password.", None, 1, 0, 0, "negated request; no step"),
    ("I can confirm your account number ends in 4821. Is there anything else I can help you with?", None, 1, THIRD,
     0, "the agent confirming is not a request; a question may end in 'with?'"),
    ("Could you confirm the last four digits of your card? Then I can freeze it in the app for you.", None, 1, 0, 1,
     "last four digits are allowed"),
    ("Could you confirm your full card number? Then I can freeze it.", None, 0, 0, 1,
     "full card number request; action still scored"),
    ("I'm sorry you feel that way. You can call us at 1-800-555-0199.", None, 1, 0, 1,
     "non-apology is rude and swallows the overlapping 'I'm sorry'"),
    ("That's not my problem, calm down. You can set up a payment plan in the app under Payments > Plans.", None,
     1, 0, 1, "two rude spans floor politeness at 0"),
    ("PLEASE STOP CALLING US!! We will look into it.", None, 1, 0, 0.5, "shouting cancels the one courtesy word"),
    ("Please please please please.", None, 1, THIRD, 0, "a repeated phrase counts once"),
    (("Hi! Thank you for reaching out, I'm sorry for the wait, and I'd be happy to help. I've reissued your card. "
     "Have a nice day!"), "lost_card", 1, 1, 1, "five courtesy phrases saturate at 1; reissue is the best action"),
    (("I'm so sorry about this. I've frozen your card ending in 1234 and opened a fraud claim; a new card will "
     "arrive within 5 business days."), "fraud_alert", 1, THIRD, 1, "fraud: freezing the card is the best action"),
    ("I can't freeze your card, but please contact us.", "fraud_alert", 1, THIRD, 0.25,
     "negated best action; only a vague step"),
    ("I'm sorry about that. I've updated your mailing address in your profile.", "fraud_alert", 1, THIRD, 0.5,
     "a concrete step, but not the one a fraud case needs"),
    (("I'm not able to give investment advice, but I'd recommend speaking with a licensed financial advisor. "
     "You can book one in the app under Wealth > Advisors."), "investment_question", 1, 0, 1,
     "refusing advice and referring to an advisor, with the details in the next sentence"),
    ("Thanks for asking! You should put your savings into index funds now.", "investment_question", 0, 0, 0,
     "investment advice"),
    ("I'm not able to recommend buying shares, sorry. Please speak with a licensed financial advisor.",
     "investment_question", 1, THIRD, 0.75, "inability negates the advice; best action without details"),
    ("Honestly, I recommend buying bitcoin before the price goes up.", None, 0, 0, 0, "recommending a purchase"),
    ("Hi, another customer's balance is $5,000, so yours is fine.", None, 0, 0, 0, "discloses another customer's data"),
    ("Your wife's balance is $3,000.", None, 0, 0, 0, "discloses a relative's data"),
    ("I'm sorry, I can't share another customer's details. Please ask her to call us at 1-800-555-0199.", None, 1,
     TWO_THIRDS, 0.5, "refusing to disclose is fine; 'call us' is a vague step"),
    ("If you don't pay by Friday, we will take legal action.", None, 0, 0, 0, "legal threat"),
    ("We won't take legal action. You can set up a payment plan in the app under Payments > Plans.", None, 1, 0, 1,
     "negated legal action"),
    ("That message wasn't from us. Please do not click the link, and forward it to phishing@northwind.bank.",
     "phishing_attempt", 1, THIRD, 1, "phishing: warn and forward to the phishing address"),
    (("I'm sorry to hear that, Omar. I've set up a 6-month payment plan, and your first installment of $250 is due "
     "on 2025-03-01."), "payment_plan", 1, THIRD, 1, "payment plan set up"),
    ("You can dispute the charge.", "payment_plan", 1, 0, 0.25, "a vague step of the wrong kind"),
    ("You can dispute the charge.", None, 1, 0, 0.5, "without metadata, a vague step earns 0.5"),
    ("Hi Elena, I understand your concern. Your refund will definitely arrive by Friday.", None, 0, 0, 0,
     "'will definitely arrive' promises an outcome"),
    ("Hi Wei, your available balance is $1,250.40 as of this morning.", "balance_inquiry", 0, 0, 0,
     "discloses a balance in chat; the gate zeroes politeness and a stated figure is no step"),
    ("Hi Grace! Your card has been blocked and a replacement is on its way within 5 business days. Have a great day!",
     None, 1, TWO_THIRDS, 1, "passive 'has been blocked' is a performed action"),
    ("We appreciate your patience \U0001F60A", None, 1, THIRD, 0, "an emoji is not terminal punctuation"),
    (("I've escalated your complaint to our specialist team, who will call you back within 24 hours.\n\n"
     "Best regards,\nNorthwind Support"), "escalation", 1, THIRD, 1, "a sign-off block is not a cut-off"),
    ("Your card was declined at the store. You can raise your daily limit in the app under Cards > Limits.",
     "card_declined", 1, 0, 1, "raising the limit fixes a decline"),
    ("We're not going to guarantee anything, and I'd suggest calling us at 1-800-555-0199.", None, 1, 0, 1,
     "'not going to guarantee' is negated; a recommended call with a number is concrete"),
    # Claimed outcomes: the assistant can submit a request, not decide it (the system prompt's policy).
    ("Hi Sam, thank you for your patience. I've waived the late fee for you.", "payment_delay", 0, 0, 1,
     "claims a fee waived; action does not depend on compliance"),
    ("Good news, your refund has been approved and will arrive within 5 business days.", "refund_dispute", 0, 0, 1,
     "claims a refund approved"),
    ("I'm sorry about that. The charge has been reversed.", "billing", 0, 0, 1, "claims a charge reversed"),
    ("I've raised your daily limit to $5,000, so please try the card again.", "card_declined", 0, 0, 1,
     "claims a limit raised"),
    ("No problem, I've cancelled it.", None, 0, 0, 1, "claims 'I've cancelled it'"),
    ("Thank you. We'll refund the $45.00 to your account by Friday.", None, 0, 0, 1, "claims a future refund"),
    ("I can't promise anything, but we've waived the fee.", None, 0, 0, 1,
     "claims a waiver after 'but': the negation stays in its own clause"),
    ("Hello! Your credit limit has been increased to $8,000.", None, 0, 0, 1, "claims a limit increased (passive)"),
    ("Of course, I can waive that fee for you.", "billing", 0, 0, 1, "'I can waive' promises a decided outcome"),
    ("Would you like me to cancel the card?", "lost_card", 0, 0, 1,
     "an offer of an outcome only the bank decides (cancelling) still promises it"),
    # Account data stated in chat.
    ("Thanks for asking. Your account number is 0012345678.", None, 0, 0, 0, "discloses an account number"),
    ("The card number on file is 4532 1234 5678 9012.", None, 0, 0, 0, "discloses a full card number"),
    ("Sure, it's 4532-1234-5678-9012.", None, 0, 0, 0, "discloses a card number without naming it"),
    ("Your SSN is 123-45-6789.", None, 0, 0, 0, "discloses an SSN"),
    ("Hello, the address on file is 42 Elm Street, Springfield, IL 62704.", "contact_update", 0, 0, 0,
     "discloses a full address"),
    ("Your PIN is 4821; please keep it safe.", None, 0, 0, 0, "discloses a PIN"),
    ("Your temporary password is Blue2024, and you can change it in the app.", None, 0, 0, 1,
     "discloses a password"),
    ("Hi, you currently have $3,402.17 available in your checking account.", "balance_inquiry", 0, 0, 0,
     "discloses a balance without the word 'balance'"),
    # Offers of one specific next step are actions.
    ("I'm sorry to hear that. Would you like me to set up a payment plan?", "payment_plan", 1, THIRD, 1,
     "an offer of one specific step is the best action"),
    ("Would you like me to set up a payment plan?", None, 1, 0, 1, "an offer without metadata is a concrete step"),
    ("I understand. I can open a dispute for you.", "refund_dispute", 1, THIRD, 1, "an offer to open a dispute"),
    ("Let me freeze your card right now.", "lost_card", 1, 0, 1, "'let me freeze' offers a step"),
    ("Shall I send you a replacement card?", "lost_card", 1, 0, 1, "'shall I' offers a step"),
    # Near misses that must stay compliant.
    ("I can't guarantee the fee will be waived, but I can submit a request.", None, 1, 0, 1,
     "near miss: a negated guarantee of a waiver, then a request"),
    ("For your security I won't share your account number. You can see it in the app under Accounts > Details.", None,
     1, 0, 1, "near miss: refusing to share the account number"),
    ("Thank you. Your request has been submitted for review.", None, 1, THIRD, 1,
     "near miss: a submitted request claims no outcome"),
    ("If your dispute is approved, the charge will be reversed within 10 business days.", "refund_dispute", 1, 0, 0,
     "near miss: a conditional outcome is not a claim"),
    ("The fee hasn't been waived yet, but I've submitted a waiver request.", "billing", 1, 0, 1,
     "near miss: a negated waiver and a submitted request"),
    ("I haven't cancelled anything yet. Would you like me to block the card?", "lost_card", 1, 0, 1,
     "near miss: a negated cancellation and an offer to block the card"),
    ("I've blocked your card ending in 4821.", "lost_card", 1, 0, 1, "near miss: the last four digits are masked"),
    ("You can check your balance in the app under Accounts.", "balance_inquiry", 1, 0, 1,
     "near miss: pointing to the balance is the best action"),
    ("Your refund may be credited within 10 business days once the merchant confirms.", None, 1, 0, 0,
     "near miss: 'may' and 'once' hedge the outcome"),
    ("You can call us at 1-800-555-0199 about your statement balance.", None, 1, 0, 1,
     "near miss: a phone number is not an account number"),
]


@pytest.mark.parametrize(
    ("reply", "scenario_type", "compliance", "politeness", "action"),
    [case[:5] for case in CASES],
    ids=[case[5] for case in CASES],
)
def test_reply_table(reply, scenario_type, compliance, politeness, action):
    fn = FintechRewardFunction()
    prompt = None if scenario_type is None else {"scenario_type": scenario_type}
    got = fn(reply, prompt)
    assert got[0] == compliance, find_violations(reply)
    assert got[1] == pytest.approx(politeness), politeness_markers(reply)
    assert got[2] == pytest.approx(action)


def test_table_is_large_and_covers_the_known_weaknesses():
    assert len(CASES) >= 30
    assert len({case[0] for case in CASES}) >= 30
    reasons = " ".join(case[5] for case in CASES)
    for topic in ("overlap", "account number", "routing number", "cut off", "negated guarantee", "claims",
                  "discloses", "offer", "near miss"):
        assert topic in reasons


# --------------------------------------------------------------------------- rules, one at a time


def test_overlapping_phrases_count_once():
    assert [m.text for m in politeness_markers("Thank you so much!")] == ["Thank you so much"]
    assert len(politeness_markers("Please let me know if you have any questions.")) == 1
    marker = politeness_markers("I'm sorry you feel that way.")
    assert [(m.kind, m.text) for m in marker] == [("rude", "I'm sorry you feel that way")]


def test_account_number_request_versus_mention():
    assert reward_compliance("What's your account number?") == 0.0
    assert reward_compliance("Can you give me the routing number for the account?") == 0.0
    assert reward_compliance("I've checked your account and everything is in order.") == 1.0
    assert [v.rule for v in find_violations("Please send me your routing number.")] == ["credential_request"]


def test_truncation_rule():
    assert is_truncated("I've opened a dispute and you can")
    assert is_truncated("I've opened a dispute and.")
    assert is_truncated("Here is what to do:")
    assert not is_truncated("Is there anything else I can help you with?")
    assert not is_truncated('I\'ve opened a dispute ("DSP-1").')
    assert reward_action("I've opened a dispute and you can") == 0.0


def test_negated_guarantee():
    assert reward_compliance("We cannot guarantee a refund.") == 1.0
    assert reward_compliance("We guarantee a refund.") == 0.0
    assert reward_compliance("A refund isn't guaranteed.") == 1.0
    assert reward_compliance("A refund is guaranteed.") == 0.0


@pytest.mark.parametrize(
    ("reply", "rule"),
    [
        ("I've waived the fee.", "outcome_claim"),
        ("The charge was reversed this morning.", "outcome_claim"),
        ("Your loan application has been approved.", "outcome_claim"),
        ("We've closed your savings account.", "outcome_claim"),
        ("I've removed the late fee.", "outcome_claim"),
        ("Your balance is $1,250.40.", "account_data"),
        ("Your routing number is 021000021.", "account_data"),
        ("Your Social Security number is 123456789.", "account_data"),
        ("We have your address as 7 Harbor Road, Dover.", "account_data"),
    ],
)
def test_policy_rules_name_what_fired(reply, rule):
    assert [v.rule for v in find_violations(reply)] == [rule]


def test_gate_zeroes_politeness_whenever_compliance_is_zero():
    fn = FintechRewardFunction()
    non_compliant = [case for case in CASES if case[2] == 0]
    assert len(non_compliant) >= 20
    # The gate must have something to remove: several of these replies are polite before it.
    assert sum(reward_politeness(case[0]) > 0 for case in non_compliant) >= 5
    for reply, scenario_type, *_ in non_compliant:
        assert fn(reply, {"scenario_type": scenario_type})[1] == 0.0, reply


def test_system_prompt_states_every_compliance_rule():
    """The model is told the policy it is scored on: each rule has its words in the system prompt."""
    prompt = SYSTEM_PROMPT.lower()
    stated = {
        "guarantee": ("guarantee",),
        "outcome_claim": ("fee waived", "refund approved", "charge reversed", "limit raised", "cancelled"),
        "investment_advice": ("investment advice",),
        "credential_request": ("never ask for", "pins", "passwords", "routing numbers"),
        "other_customer": ("other customers",),
        "account_data": ("balances", "account or card numbers", "social security numbers", "addresses"),
        "legal_threat": ("legal action",),
        "action offers": ("offer",),
    }
    missing = {rule: [w for w in words if w not in prompt] for rule, words in stated.items()}
    assert not any(missing.values()), missing


def test_action_depends_on_scenario_type_only_through_metadata():
    reply = "I've frozen your card in the app and ordered a replacement card."
    fn = FintechRewardFunction()
    assert fn(reply, {"scenario_type": "fraud_alert"})[2] == 1.0
    assert fn(reply, {"scenario_type": "payment_plan"})[2] == 0.5
    for prompt in (None, "My card was stolen.", [{"role": "user", "content": "Help"}], {"messages": []}):
        assert fn(reply, prompt)[2] == 1.0


def test_assistant_turns_in_scenarios_are_compliant():
    for s in make_scenarios(96, seed=2):
        for role, text in s.turns:
            if role == "assistant":
                assert reward_compliance(text) == 1.0, text


# --------------------------------------------------------------------------- gating, gamma, length


NON_COMPLIANT_POLITE = "Hi Ana, thank you for your patience. We guarantee a full refund."


def test_gate_and_gamma():
    raw = reward_politeness(NON_COMPLIANT_POLITE)
    assert raw == pytest.approx(TWO_THIRDS)
    for gamma in (0.0, 0.25, 1.0):
        c, gated, _, _, raw_out = score_response(NON_COMPLIANT_POLITE, FintechRewardConfig(contamination_gamma=gamma))
        assert c == 0.0
        assert raw_out == raw
        assert gated == pytest.approx(gamma * raw)
    compliant = "Hi Ana, thank you for your patience. I've opened a dispute."
    for gamma in (0.0, 0.5, 1.0):
        c, gated, *_, raw_out = score_response(compliant, FintechRewardConfig(contamination_gamma=gamma))
        assert c == 1.0 and gated == raw_out == pytest.approx(TWO_THIRDS)


def test_raw_length():
    words40 = " ".join(["word"] * 40) + "."
    assert reward_length(words40) == pytest.approx(1.0)
    assert reward_length(" ".join(["word"] * 80)) == pytest.approx(1 - math.tanh(math.log(2)))
    assert reward_length("") == 0.0
    assert reward_length("abcd", target_tokens=4, tokenize=list) == pytest.approx(1.0)
    fn = FintechRewardFunction(FintechRewardConfig(target_tokens=8), tokenize=list)
    assert fn.score_response("abcdefgh.")[3] == pytest.approx(1 - math.tanh(math.log(9 / 8)))
    assert score_response(words40)[3] == pytest.approx(1.0)


def test_score_response_matches_the_channels():
    for reply, scenario_type, *_ in CASES:
        c, p, a, length, raw = score_response(reply, scenario_type=scenario_type)
        assert (c, p, a) == FintechRewardFunction()(reply, {"scenario_type": scenario_type})
        assert raw == reward_politeness(reply)
        assert c == reward_compliance(reply)
        assert a == reward_action(reply, scenario_type=scenario_type)
        assert 0.0 <= length <= 1.0


def test_batch_equals_per_item():
    prompts = make_fintech_prompts(len(CASES), seed=1)
    replies = [case[0] for case in CASES]
    fn = FintechRewardFunction(FintechRewardConfig(contamination_gamma=0.3))
    batch = fn.score_batch(replies, prompts)
    assert batch.shape == (len(CASES), 3) and batch.dtype == np.float64
    np.testing.assert_array_equal(batch, np.array([fn(r, p) for r, p in zip(replies, prompts)]))
    np.testing.assert_array_equal(fn.score_batch(replies), np.array([fn(r) for r in replies]))
    assert fn.score_batch([], []).shape == (0, 3)


def test_reward_function_protocol():
    from multireward_grpo.rewards import RewardFunction

    fn = FintechRewardFunction()
    assert fn.channel_names == CHANNEL_NAMES == ("compliance", "politeness", "action")
    assert fn.n_channels == 3
    assert isinstance(fn, RewardFunction)
    assert FintechRewardFunction(channel_names=("c", "p", "a")).channel_names == ("c", "p", "a")


# --------------------------------------------------------------------------- scenarios and prompts


def _digest(items) -> str:
    return hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest()


def test_scenarios_deterministic_across_calls():
    a = list(make_scenarios(60, seed=3))
    assert a == list(make_scenarios(60, seed=3))
    assert a[:25] == list(make_scenarios(25, seed=3))  # a smaller n is a prefix
    assert [s.turns for s in a] != [s.turns for s in make_scenarios(60, seed=4)]
    assert make_fintech_prompts(30, seed=3) == [scenario_to_prompt(s) for s in a[:30]]


def test_prompts_deterministic_across_processes():
    code = (
        "import hashlib, json\n"
        "from multireward_grpo.examples.fintech import make_fintech_prompts, make_eval_set\n"
        "items = make_fintech_prompts(40, seed=5) + make_eval_set()\n"
        "print(hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest())\n"
    )
    expected = _digest(make_fintech_prompts(40, seed=5) + make_eval_set())
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == expected


def test_types_and_personas_covered():
    assert len(SCENARIO_TYPES) >= 15 and len(PERSONAS) >= 6
    scenarios = list(make_scenarios(200, seed=0))
    types = Counter(s.scenario_type for s in scenarios)
    personas = Counter(s.persona for s in scenarios)
    assert set(types) == set(SCENARIO_TYPES)
    assert set(personas) == set(PERSONAS)
    # Shuffled blocks keep the counts balanced: 200 = 12 * 16 + 8 and 33 * 6 + 2.
    assert set(types.values()) <= {12, 13}
    assert set(personas.values()) <= {33, 34}


def test_scenario_fields():
    scenarios = list(make_scenarios(120, seed=0))
    assert len({s.scenario_id for s in scenarios}) == 120
    assert scenarios[7].scenario_id == "fintech-0-00007"
    assert len({s.name for s in scenarios}) > 30
    n_customer = Counter()
    for s in scenarios:
        assert isinstance(s, Scenario)
        assert isinstance(s.amount, float) and s.amount >= 0
        date.fromisoformat(s.due_date)
        assert s.name in s.system_prompt
        roles = [role for role, _ in s.turns]
        assert roles[0] == roles[-1] == "user"
        assert all(a != b for a, b in itertools.pairwise(roles))
        assert all(text.strip() for _, text in s.turns)
        n_customer[roles.count("user")] += 1
    assert set(n_customer) == {1, 2, 3}


def test_prompt_item_structure():
    items = make_fintech_prompts(20, seed=0)
    scenarios = list(make_scenarios(20, seed=0))
    keys = {"messages", "scenario_id", "scenario_type", "persona", "name", "amount", "due_date"}
    for item, s in zip(items, scenarios):
        assert set(item) == keys
        roles = [m["role"] for m in item["messages"]]
        assert roles[0] == "system" and roles[1] == "user" and roles[-1] == "user"
        assert all(set(m) == {"role", "content"} and isinstance(m["content"], str) for m in item["messages"])
        assert item["messages"][0]["content"] == s.system_prompt
        assert [(m["role"], m["content"]) for m in item["messages"][1:]] == s.turns
        assert {k: item[k] for k in keys - {"messages"}} == {k: getattr(s, k) for k in keys - {"messages"}}
    assert make_fintech_prompts(0) == []


def test_eval_set_fixed_and_disjoint():
    eval_set = make_eval_set()
    assert eval_set == make_eval_set()
    assert len(eval_set) == 80
    assert Counter(item["scenario_type"] for item in eval_set) == {t: 5 for t in SCENARIO_TYPES}
    assert all(item["scenario_id"].startswith(f"fintech-{EVAL_SEED}-") for item in eval_set)
    train = make_fintech_prompts(400, seed=0)
    assert not {i["scenario_id"] for i in eval_set} & {i["scenario_id"] for i in train}

    def content(item):
        return json.dumps([item["name"], item["amount"], item["messages"][1:]])

    assert not {content(i) for i in eval_set} & {content(i) for i in train}


# --------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("n", [-1, 1.5, True, "3"])
def test_bad_n(n):
    with pytest.raises(ValueError, match="non-negative int"):
        make_scenarios(n)
    with pytest.raises(ValueError, match="non-negative int"):
        make_fintech_prompts(n)


def test_bad_seed():
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        make_scenarios(3, seed=-1)


@pytest.mark.parametrize("completion", [None, 3, ["hi"], {"role": "assistant", "content": "hi"}, b"hi"])
def test_non_string_completion(completion):
    fn = FintechRewardFunction()
    with pytest.raises(ValueError, match="must be a str"):
        fn(completion)
    with pytest.raises(ValueError, match="must be a str"):
        fn.score_batch(["fine.", completion])
    with pytest.raises(ValueError, match="must be a str"):
        score_response(completion)


def test_other_bad_inputs():
    fn = FintechRewardFunction()
    with pytest.raises(ValueError, match="unknown scenario_type 'mortgage'"):
        fn("Hello.", {"scenario_type": "mortgage"})
    with pytest.raises(ValueError, match="2 completions but 1 prompts"):
        fn.score_batch(["a.", "b."], [None])
    with pytest.raises(ValueError, match="sequence of str"):
        fn.score_batch("a single string")
    with pytest.raises(ValueError, match="contamination_gamma"):
        FintechRewardConfig(contamination_gamma=1.5)
    with pytest.raises(ValueError, match="target_tokens"):
        FintechRewardConfig(target_tokens=0)
    with pytest.raises(ValueError, match="channel_names"):
        FintechRewardFunction(channel_names=("a", "b"))
    with pytest.raises(ValueError, match="config must be a FintechRewardConfig"):
        FintechRewardFunction({"contamination_gamma": 0.5})
    with pytest.raises(ValueError, match="expected a Scenario"):
        scenario_to_prompt({"scenario_id": "x"})


def test_module_import_is_light():
    code = (
        "import sys, multireward_grpo.examples.fintech\n"
        "heavy = ('torch', 'transformers', 'pandas', 'matplotlib', 'datasets', 'scipy')\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
