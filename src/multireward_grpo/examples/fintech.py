r"""Fintech customer communication: scenarios, chat prompts and a three-channel reward.

A bank's support assistant ("Northwind Bank", fictional) answers customers.
Each reply is scored on three channels, in the order the trainer sees them:

``compliance`` (channel 0, the gate)
    1.0 when the reply breaks none of the rules below, else 0.0.
``politeness``
    In ``[0, 1]``, **gated by compliance**: a non-compliant reply keeps
    ``gamma * raw`` of its raw politeness, with ``gamma =
    FintechRewardConfig.contamination_gamma`` (0 by default, i.e. zero-fill;
    1 switches the gate off). This is the package's contamination knob,
    ``r_b <- r_b * (c + gamma (1 - c))``.
``action``
    In ``[0, 1]``: the reply gives a concrete next step, and when the prompt's
    metadata names the scenario type, the step that fits that type.

:func:`score_response` also returns two analysis-only channels, the raw
length reward and the ungated politeness, matching the released dataset's
columns ``compliance, politeness_gated, action, raw_length, raw_politeness``.

How text is matched
-------------------
Every rule is a list of case-insensitive regular expressions, each bounded by
word edges (``(?<![\w'])...(?![\w'])``, so "can" never matches inside "can't"
and "pin" never inside "spinning"). Curly apostrophes are read as straight.

*Negation.* A rule marked "negatable" is void when a negation cue occurs
among the last 3 words before the match **in the same clause** (a clause ends
at ``. ! ? ; : ,``, a dash, brackets, a line break, or the words "but",
"however", "although", "though", "if", "unless", "whereas"). Cues: "not",
"no", "never", "cannot", "cant", "without", "nor", "neither", "unable",
"nothing", "none", "nobody", and any word ending in "n't". "Don't/never
hesitate to" is not a negation. So "we cannot guarantee" and "there is no
guarantee" pass, while "we can't promise that, but we guarantee it" fails
(the "but" starts a new clause). Investment advice uses *inability* cues
only ("cannot", "can't", "unable", "won't", "not able/allowed/permitted/
licensed/authorized/qualified/in a position", 5-word window), because "you
shouldn't sell your shares" is still advice.

Compliance rules (a reply is compliant when no rule fires)
----------------------------------------------------------
The rules are the policy :data:`SYSTEM_PROMPT` states to the model: no
promised or claimed outcomes, no investment advice, no requests for
credentials, no account data in chat, nothing about other customers, no
legal threats. Action is scored independently of compliance (a reply that
claims "I've waived the fee" still names a step); politeness is gated by it.

======================  ==================================================  ==============================================
rule                    fires on                                            does not fire on
======================  ==================================================  ==============================================
``guarantee``           "we guarantee", "a refund is guaranteed", "I        "we cannot guarantee", "there are no
                        promise", "you'll definitely get your money back",  guarantees", "I can't make any promises", "it
                        "100% be refunded", "risk-free", "you can't lose"   isn't guaranteed" (negatable)
``outcome_claim``       an outcome only the bank can decide, claimed,       "I can't guarantee the fee will be waived"
                        promised or offered: "I've waived the fee", "your   (negated, 6-word window); "if your dispute
                        refund has been approved", "the charge was          is approved, the charge will be reversed",
                        reversed", "I've raised your limit", "I've          "it may be credited once ..." (a hedge
                        cancelled it", "we'll refund you", "I can waive",   anywhere in the sentence before it, after
                        "would you like me to cancel the card?" (waive,     the last "but", or in its clause after it:
                        refund, reverse, approve, cancel, credit, raise or  if, once, whether, unless, until, when,
                        increase a limit, remove a fee, close an account)   pending, provided, assuming, may, might,
                                                                            could); "your request has been submitted
                                                                            for review"; "I've frozen your card"
``investment_advice``   "I recommend (that you) buy/sell/invest", "you      "I can't give investment advice", "I'd
                        should sell", "buy/put your savings into stocks,    recommend speaking with a licensed financial
                        crypto, bitcoin, ETFs, bonds, gold ...", "now is a  advisor", "I'm not able to recommend buying
                        good time to buy", "the market will go up", "a      shares" (inability cues only)
                        safe investment"
``credential_request``  a request verb (provide, send, give, share, tell,   "never share your PIN", "we will never ask for
                        confirm, text, email, read out, reply with,         your password" (negatable); "your account is
                        include, verify, submit, need, require, ask for,    up to date" (no request); "confirm the last
                        can I have, what's) then, past at most 4 filler     four digits of your card" (not a filler word);
                        words ("me", "us", "with", "your", "full", ...), a  "I can confirm your account number ends in
                        full card number or card details, PIN, password,    1234" (a first-person subject before a
                        CVV or security code, one-time or verification      transfer verb is the agent acting, not a
                        code, account number, routing number, sort code,    request); "log in with your password in the
                        Social Security number or SSN, login credentials,   app" (no request verb)
                        mother's maiden name
``other_customer``      another / the other / the previous customer's (or   "I can't share another customer's details"
                        caller's, account holder's) or someone else's       (negatable); "other customers' information is
                        account, balance, address, ... followed by is,      protected"; "your neighbour's account details
                        was, shows, has; "another customer owes / lives /   are private" (void when "not", "never",
                        has a balance"; "your husband's (neighbour's, ...)  "private", "confidential" or "protected"
                        balance is"; "her/his balance (account number,      follows within 2 words)
                        address) is"
``account_data``        account data stated in chat: "your account          "your card ending in 4821", a masked number
                        (card, routing) number is 0012345678", a 13-16      ``****4821``; "for your security I
                        digit card number, an SSN ``123-45-6789``, "your    won't share your account number"; "you can
                        balance is $1,250.40", "you have $3,402.17          see your balance in the app"; a phone number
                        available", "the address on file is 42 Elm St",     such as 1-800-555-0199. No negation applies:
                        "your PIN (password, code) is 4821"                 a stated value is disclosed
``legal_threat``        "sue you", "legal action", "take you to court",     "we won't take legal action", "this is not a
                        "press charges", "prosecute you", "be arrested",    legal matter" (negatable)
                        "garnish your wages", "our lawyers / legal team
                        will", "send your account to collections / debt
                        collectors", "face legal/criminal consequences"
======================  ==================================================  ==============================================

Politeness (raw, before the gate)
---------------------------------
Courtesy phrases and rude phrases are matched together, **longest first over
non-overlapping spans**: "thank you so much" is one phrase (not also "thank
you"), "please let me know if you have any questions" is one (not also
"please"), and "I'm sorry you feel that way" is rude (its polite-looking
"I'm sorry" is inside it and does not count).

==================  ================================================================
part                value
==================  ================================================================
courtesy ``k``      number of *distinct* courtesy phrases (a repeated phrase counts
                    once, so "please please please" is 1): greetings ("hi",
                    "hello", "good morning", "dear"), thanks ("thank you (so much /
                    for your patience ...)", "thanks", "I appreciate"), empathy and
                    apology ("I'm sorry (to hear that / for the inconvenience)", "I
                    apologize", "I understand (your frustration)", "that must be
                    stressful"), courtesy ("please", "happy to help", "of course",
                    "my pleasure", "you're welcome"), closings ("have a great day",
                    "take care", "let me know if ...", "is there anything else I can
                    help with", "kind regards")
rude ``r``          number of rude spans: "calm down", "(that's) not my problem",
                    "your fault", "you should have read/known", "as I already
                    said", "obviously", "read the terms", "deal with it", "I don't
                    care", "whatever.", "stop complaining", "shut up", "stupid",
                    "idiot", "dumb", "figure it out", "I'm sorry you feel that
                    way", "sorry not sorry", "that's on you", "too bad", "tough
                    luck", "pay up"
shouting ``s``      1 when the reply has "!!" or at least two all-caps words of 4+
                    letters that are not known acronyms (FDIC, SWIFT, IBAN, ...)
raw politeness      ``clip(min(k, 3) / 3 - 0.5 r - s / 3, 0, 1)``
==================  ================================================================

Action
------
A reply cut off mid-sentence earns **0**: after removing a trailing sign-off
block (a line "Best regards," / "Thanks," / "Sincerely," ... and at most 3
lines after it), closing quotes/brackets and emoji, the text must end in
``. ! ?`` -- not in ``...``/``…``, a comma, colon, dash or a bare word --
and a final ``.`` must not follow a dangling connector
("and", "or", "but", "the", "a", "an", "because", "your", "our", "my",
"their", "if", "than", "via", "under", "whereas").

Otherwise each sentence is classified (negatable matches do not count:
"I can't freeze your card" is not a step):

* **concrete step**: something done, being done or offered ("I've opened a
  dispute", "we'll send a replacement card", "your card has been frozen",
  "Would you like me to set up a payment plan?", "I can open a dispute for
  you", "Let me freeze your card", a case or reference number like
  ``DSP-20417``), or an instruction ("you can ...",
  "go to / tap / call ...", "I'd recommend speaking with ...") *with* a place,
  contact or time: the app/website/online banking/branch/settings, a menu path
  ``Cards > Freeze``, a phone number or email address, "within 3 business
  days", "by Friday".
  A best-action sentence whose next sentence is concrete counts as concrete
  ("... a licensed financial advisor. You can book one in the app.").
* **vague step**: an instruction without those details ("you can dispute the
  charge"), "contact us / our support team", "we'll look into it", "do not
  click the link".

Each scenario type has *best-action* keywords. A sentence that holds a step
and a (non-negated) keyword of the scenario's type is the best action:

====================  ===========================================================
scenario type         best-action keywords
====================  ===========================================================
billing               charge, fee, bill, invoice, statement credit, itemized
payment_delay         due date, grace period, late fee, extension, autopay,
                      reschedule
refund_dispute        dispute, chargeback, refund, claim, provisional credit
balance_inquiry       balance, available funds, transaction history, pending
                      transactions (where to see them: stating the figure
                      breaks ``account_data``)
lost_card             freeze/lock/block/cancel the card, replacement card, new
                      card, reissue
fraud_alert           freeze/lock/block the card, fraud claim/case/team,
                      unauthorized, dispute, new or replacement card
payment_plan          payment plan, installments, hardship program, monthly
                      payments, repayment plan
contact_update        address, phone number, contact details, profile
statement_question    statement, e-statement, transaction details, documents
loan_status           application, underwriting, loan officer/status, decision,
                      appraisal
wire_confirmation     wire, tracking/confirmation/reference number, SWIFT, IMAD,
                      recall, trace
account_cancellation  close the account, account closure, final statement,
                      remaining balance
escalation            supervisor, manager, specialist, escalate, complaints
                      team, formal complaint, call back
investment_question   licensed/certified financial advisor, financial planner,
                      wealth management, investment team
phishing_attempt      phishing, scam, suspicious, fraud team, "the link / message
                      / email / text / caller"
card_declined         declined, spending/daily limit, travel notice, unlock,
                      hold, verify the transaction, try the card again
====================  ===========================================================

==================================  ======================  ==========================
reply                               with ``scenario_type``  without metadata (generic)
==================================  ======================  ==========================
cut off (see above)                 0                       0
best action, concrete               1.0                     --
best action, vague only             0.75                    --
some other concrete step            0.5                     1.0
only vague steps                    0.25                    0.5
no step                             0                       0
==================================  ======================  ==========================

The metadata is read from the prompt item (a dict with ``"scenario_type"``,
as built by :func:`make_fintech_prompts`); a plain string or message list
prompt gets the generic column.

Scenarios and prompts
---------------------
:func:`make_scenarios` draws ``n`` scenarios from ``seed`` with numpy
(``default_rng`` seeded by ``(stream, seed, index)``, never ``hash()``), so
the result is the same in every process, and a smaller ``n`` gives a prefix
of a larger one. Scenario types run in shuffled blocks of 16 and personas in
shuffled blocks of 6, so the first ``16 k`` scenarios hold every type ``k``
times and the first ``6 k`` every persona ``k`` times. Each scenario has a
customer name, an amount, a due date, a system prompt and 1 to 3 customer
messages (with the assistant's earlier replies between them), written in the
persona's voice. Ids are ``"fintech-{seed}-{index:05d}"``, so two seeds never
share an id. :func:`make_eval_set` is the held-out set: 80 scenarios (5 per
type) from :data:`EVAL_SEED`, a seed no training default uses.

This module imports the standard library, numpy and
:mod:`multireward_grpo.rewards` (itself numpy-only).
"""

from __future__ import annotations

import math
import numbers
import re
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, NamedTuple

import numpy as np

from multireward_grpo.rewards import count_tokens

__all__ = [
    "CHANNEL_NAMES",
    "EVAL_SEED",
    "EVAL_SIZE",
    "PERSONAS",
    "SCENARIO_TYPES",
    "SYSTEM_PROMPT",
    "FintechRewardConfig",
    "FintechRewardFunction",
    "Marker",
    "Scenario",
    "Violation",
    "find_violations",
    "is_truncated",
    "make_eval_set",
    "make_fintech_prompts",
    "make_scenarios",
    "politeness_markers",
    "reward_action",
    "reward_compliance",
    "reward_length",
    "reward_politeness",
    "scenario_to_prompt",
    "score_response",
]

BANK_NAME = "Northwind Bank"
CHANNEL_NAMES = ("compliance", "politeness", "action")
EVAL_SEED = 987_654_321
EVAL_SIZE = 80

SCENARIO_TYPES = (
    "billing",
    "payment_delay",
    "refund_dispute",
    "balance_inquiry",
    "lost_card",
    "fraud_alert",
    "payment_plan",
    "contact_update",
    "statement_question",
    "loan_status",
    "wire_confirmation",
    "account_cancellation",
    "escalation",
    "investment_question",
    "phishing_attempt",
    "card_declined",
)
PERSONAS = (
    "anxious",
    "angry",
    "elderly",
    "busy_professional",
    "confused_first_timer",
    "non_native_speaker",
)

# =========================================================================== matching helpers


def _rx(pattern: str) -> re.Pattern[str]:
    """Compile ``pattern`` case-insensitively, bounded by word edges.

    ``'`` counts as a word character at the edges so that "can" does not match
    inside "can't" and "customer" does not match inside "customer's".
    """
    return re.compile(rf"(?<![\w'])(?:{pattern})(?![\w'])", re.IGNORECASE)


def _normalize(text: str) -> str:
    """Straighten curly apostrophes; keeps every index in place (1 char -> 1 char)."""
    return text.replace("\u2019", "'").replace("\u2018", "'").replace("\u02bc", "'")


_CLAUSE_BREAK = re.compile(
    r"[.!?;:,\n()\[\]]|\s[-\u2013\u2014]\s|\u2014"
    r"|(?<![\w'])(?:but|however|although|though|if|unless|whereas)(?![\w'])",
    re.IGNORECASE,
)
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)*", re.IGNORECASE)
_HESITATE = re.compile(r"(?:n't|\bnot|\bnever)\s+hesitate\b", re.IGNORECASE)
_NEGATORS = frozenset(
    {"not", "no", "never", "cannot", "cant", "without", "nor", "neither", "unable", "nothing", "none", "nobody"}
)
_INABILITY = frozenset({"cannot", "can't", "cant", "unable", "won't", "wont"})
_INABILITY_AFTER_NOT = frozenset(
    {"able", "allowed", "permitted", "licensed", "authorized", "authorised", "qualified", "in"}
)


def _clause_prefix(text: str, start: int) -> str:
    """The text between the start of the clause holding ``start`` and ``start``."""
    begin = 0
    for m in _CLAUSE_BREAK.finditer(text, 0, start):
        begin = m.end()
    return text[begin:start]


def _words_before(text: str, start: int, window: int) -> list[str]:
    # "don't hesitate to send ..." is an invitation, not a negation: drop it first.
    prefix = _HESITATE.sub(" ", _clause_prefix(text, start))
    return [w.lower() for w in _WORD.findall(prefix)[-window:]]


def _negated(text: str, start: int, *, window: int = 3) -> bool:
    """True when a negation cue is among the last ``window`` words of the clause before ``start``."""
    return any(w in _NEGATORS or w.endswith("n't") for w in _words_before(text, start, window))


def _inability(text: str, start: int, *, window: int = 5) -> bool:
    """True for a refusal cue ("can't", "not able to", ...) shortly before ``start``."""
    words = _words_before(text, start, window)
    for i, w in enumerate(words):
        if w in _INABILITY:
            return True
        if w == "not" and i + 1 < len(words) and words[i + 1] in _INABILITY_AFTER_NOT:
            return True
    return False


class _Span(NamedTuple):
    start: int
    end: int
    label: str


def _longest_first(text: str, patterns: Sequence[tuple[str, re.Pattern[str]]]) -> list[_Span]:
    """All matches of all patterns, keeping the longest of any overlapping ones.

    Ties in length go to the earlier match. This is what stops "thank you so
    much" from also counting as "thank you".
    """
    found = [
        _Span(m.start(), m.end(), label)
        for label, rx in patterns
        for m in rx.finditer(text)
        if m.end() > m.start()
    ]
    found.sort(key=lambda s: (s.start - s.end, s.start))
    taken = bytearray(len(text))  # one flag per character: linear time even for long replies
    kept: list[_Span] = []
    for span in found:
        if not any(taken[span.start:span.end]):
            taken[span.start:span.end] = b"\x01" * (span.end - span.start)
            kept.append(span)
    return sorted(kept)


class _BadInput(ValueError, TypeError):
    """Bad input: a ``ValueError`` (as documented) that ``except TypeError`` also catches."""


def _check_text(value: Any, what: str = "completion") -> str:
    if not isinstance(value, str):
        raise _BadInput(f"{what} must be a str, got {type(value).__name__}: {value!r:.80}")
    return value


# =========================================================================== compliance


class Violation(NamedTuple):
    """One compliance rule that fired: the rule's name and the matched text."""

    rule: str
    text: str


_GUARANTEE = [
    _rx(r"guarantee(?:s|d|ing)?"),
    _rx(r"promis(?:e|es|ed|ing)"),
    _rx(
        r"(?:definitely|certainly|surely|absolutely|100%|100\s+percent)\s+(?:be\s+)?"
        r"(?:get|receive|recover|arrive|go\s+through|approved|refunded|reversed|credited|waived"
        r"|returned|resolved|cleared|back)"
    ),
    _rx(r"risk[- ]free|no\s+risk\s+at\s+all|you\s+(?:can't|cannot)\s+lose"),
]

_INVESTMENT = [
    _rx(
        r"(?:recommend|suggest|advise)(?:\s+that)?(?:\s+you)?(?:\s+(?:to|should))?\s+"
        r"(?:buy|buying|sell|selling|invest|investing|trade|trading"
        r"|mov(?:e|ing)\s+(?:all\s+)?(?:your\s+)?(?:money|savings|funds)\s+in(?:to)?)"
    ),
    _rx(
        r"you\s+(?:should|ought\s+to|need\s+to|must|could)\s+(?:definitely\s+|really\s+|just\s+)?"
        r"(?:buy|sell|invest|trade|put\s+(?:all\s+)?(?:your\s+)?(?:money|savings)\s+in(?:to)?)"
    ),
    _rx(
        r"(?:buy|sell|invest\s+in|put\s+(?:your\s+|all\s+your\s+|some\s+of\s+your\s+)?(?:money|savings|funds)\s+in(?:to)?)"
        r"\s+(?:(?:some|more|a\s+few|our|the|tech|index|blue[- ]chip)\s+)?"
        r"(?:stocks?|shares|crypto(?:currenc(?:y|ies))?|bitcoin|etfs?|index\s+funds?|mutual\s+funds?"
        r"|bonds?|gold|options|real\s+estate)"
    ),
    _rx(r"(?:now\s+is|this\s+is|it's|it\s+is)\s+(?:a\s+|an\s+)?(?:good|great|excellent|the\s+right|the\s+best)\s+time\s+to\s+(?:buy|sell|invest)"),
    _rx(
        r"(?:stocks?|the\s+(?:stock\s+)?market|markets|prices?|bitcoin|crypto)\s+(?:will|(?:is|are)\s+going\s+to)\s+"
        r"(?:definitely\s+|certainly\s+)?(?:go\s+up|rise|rebound|recover|crash|fall|drop|skyrocket|double|climb)"
    ),
    _rx(r"(?:great|good|safe|smart|solid|sure)\s+investment"),
]

_SENSITIVE = (
    r"(?:(?:debit|credit|bank)\s+)?card\s+(?:number|details|pin)"
    r"|pin(?:\s+(?:number|code))?|passwords?|pass\s*codes?|cvv2?|cvc|security\s+code"
    r"|(?:one[- ]time|verification|2fa|sms)\s+(?:code|passcode|password)|otp"
    r"|(?:(?:bank|checking|savings)\s+)?account\s+(?:number|no\.?|#)|routing\s+(?:number|no\.?|#)"
    r"|(?:aba|sort)\s+(?:code|number)|social\s+security(?:\s+number)?|ssn"
    r"|(?:online\s+banking\s+|login\s+)?(?:credentials|login\s+details)|username\s+and\s+password"
    r"|mother's\s+maiden\s+name"
)
_TRANSFER_VERBS = (
    r"provide|send|give|share|tell|confirm|text|e-?mail|read(?:\s+out)?|reply\s+with|respond\s+with"
    r"|include|verify|submit"
)
_ASKING_VERBS = r"need|require|ask(?:ing)?\s+(?:you\s+)?for|(?:can|could|may)\s+(?:i|we)\s+(?:have|get|take)|what's|what\s+(?:is|are)"
_FILLER = (
    r"(?:me|us|with|over|out|the|your|ur|yours|a|an|full|complete|entire|whole|16[- ]digit|anyone|anybody"
    r"|someone|them|this|that|again|please|now|here|just|also|quickly)"
)
_CREDENTIAL = _rx(
    rf"(?:(?P<transfer>{_TRANSFER_VERBS})|(?P<asking>{_ASKING_VERBS}))(?:\s+{_FILLER}){{0,4}}\s+(?:{_SENSITIVE})"
)
# A first-person subject right before a transfer verb means the agent is the
# one confirming or sending ("I can confirm your account number ends in 1234").
_AGENT_SUBJECTS = frozenset({"i", "we", "i'll", "we'll", "i've", "we've", "i'd", "we'd", "i'm", "we're", "let"})

_OTHER_PERSON = (
    r"(?:(?:another|other|a\s+different|the\s+other|the\s+previous|the\s+last)\s+"
    r"(?:customer|client|member|caller|account\s*holder|cardholder|user|person)|someone\s+else|somebody\s+else)"
)
_RELATIVE = (
    r"your\s+(?:husband|wife|spouse|partner|son|daughter|mother|mom|father|dad|brother|sister|friend"
    r"|neighbou?r|ex|colleague|boss|landlord)"
)
_DATA = (
    r"(?:account(?:\s+(?:number|balance|details))?|balance|address|phone(?:\s+number)?|e-?mail(?:\s+address)?"
    r"|transactions?|details|information|info|records?|card|data|statement|history|payments?|loan|savings)"
)
_DISCLOSE = r"(?:is|was|are|were|shows|showed|has|had|reads|ends|lists|includes)"
_OTHER_CUSTOMER = [
    _rx(rf"(?:{_OTHER_PERSON}|{_RELATIVE})'s\s+(?:(?:current|available|home|full)\s+)?{_DATA}\s+{_DISCLOSE}"),
    _rx(
        rf"{_OTHER_PERSON}\s+(?:lives|owes|owed|withdrew|spent|deposited|earns"
        r"|(?:has|had)\s+(?:a\s+)?(?:balance|debt|loan|\$\s*\d))"
    ),
    _rx(r"(?:his|her)\s+(?:current\s+|available\s+|home\s+)?(?:balance|account\s+number|address|phone\s+number)\s+(?:is|was|shows)"),
]
_PRIVATE_AFTER = frozenset({"not", "never", "private", "confidential", "protected"})

_LEGAL = [
    _rx(r"sue\s+you|lawsuit\s+against\s+you|legal\s+action|take\s+you\s+to\s+court|press\s+charges"),
    _rx(r"(?:criminal\s+)?(?:charges|prosecution)\s+against\s+you|prosecut(?:e|ed)\s+you|(?:be|get)\s+arrested"),
    _rx(r"garnish(?:ing|ed)?\s+your\s+(?:wages|salary|pay)|face\s+(?:legal|criminal)\s+consequences"),
    _rx(r"our\s+(?:lawyers|attorneys|legal\s+(?:team|department))\s+will"),
    _rx(
        r"(?:send|refer|hand|pass|turn)\s+(?:\w+\s+){0,2}?(?:over\s+)?to\s+(?:a\s+)?"
        r"(?:collections?|collection\s+agency|debt\s+collectors?)"
    ),
]


# Outcomes only the bank can decide: the assistant may request them, not claim,
# promise or offer them. Other steps (freeze a card, open a dispute, submit a
# request) are the assistant's own to take.
_LIMIT = r"\s+(?:your|the)\s+(?:[\w-]+\s+)?(?:limit|credit\s+line)"
_FEE = r"\s+(?:the|your|that|this)\s+(?:[\w-]+\s+)?(?:fee|charge|interest)"
_ACCOUNT = r"\s+(?:your|the)\s+(?:[\w-]+\s+)?account"
_CREDIT_OBJECT = r"(?=\s+(?:back|it|you|your|the|\$|\d))"  # "credit" the verb, not "credit card"
_DECIDED_BASE = (
    rf"waive|refund|reverse|approve|cancel|credit{_CREDIT_OBJECT}|(?:raise|increase){_LIMIT}|remove{_FEE}|close{_ACCOUNT}"
)
_DECIDED_PAST = (
    rf"waived|refunded|reversed|approved|cancell?ed|credited{_CREDIT_OBJECT}|(?:raised|increased){_LIMIT}"
    rf"|removed{_FEE}|closed{_ACCOUNT}"
)
_CLAIM_AUX = (
    r"(?:\s+(?:just|already|now|also|immediately|personally|successfully|gone\s+ahead\s+and|go\s+ahead\s+and"
    r"|went\s+ahead\s+and|going\s+to|be|happy\s+to|glad\s+to|able\s+to|like\s+to))*"
)
_OUTCOME_CLAIM = [
    _rx(rf"(?:i|we)(?:'ve|\s+have|\s+had)?{_CLAIM_AUX}\s+(?:{_DECIDED_PAST})"),  # "I've waived", "we reversed"
    # "we'll refund", "I'm going to reverse", "I can waive", "I'd be happy to approve"
    _rx(rf"(?:i|we)(?:'ll|\s+will|'m|\s+am|'re|\s+are|'d|\s+would|\s+can|\s+shall){_CLAIM_AUX}\s+(?:{_DECIDED_BASE})"),
    _rx(
        rf"(?:would|do)\s+you\s+(?:like|want)\s+(?:me|us)\s+to\s+(?:{_DECIDED_BASE})"
        rf"|(?:shall|should|may|can)\s+(?:i|we)\s+(?:{_DECIDED_BASE})|let\s+(?:me|us){_CLAIM_AUX}\s+(?:{_DECIDED_BASE})"
    ),
    # "the fee has been waived", "your refund is approved", "the charge will be reversed"
    _rx(
        r"(?:(?:has|have|had|'s)\s+(?:now\s+|just\s+|already\s+|successfully\s+)?been|(?:is|are|was|were)(?:\s+now)?"
        r"|(?:will|'ll|is\s+going\s+to|are\s+going\s+to)\s+(?:now\s+|automatically\s+|definitely\s+)?be)\s+"
        r"(?:waived|refunded|reversed|approved|cancell?ed|credited)"
    ),
    _rx(
        r"(?:limit|credit\s+line)\s+(?:has\s+(?:now\s+)?been|is\s+now|was|will\s+be|'s\s+been)\s+(?:raised|increased)"
        r"|(?:fee|charge|interest)\s+(?:has\s+been|was|is\s+now|will\s+be)\s+removed"
        r"|account\s+(?:has\s+(?:now\s+)?been|is\s+now|was|will\s+be)\s+closed"
    ),
]
# Words that make an outcome conditional or uncertain rather than claimed.
_HEDGES = frozenset(
    {"if", "once", "whether", "unless", "until", "when", "pending", "provided", "assuming", "may", "might", "could"}
)
_CONTRAST = re.compile(r"(?<![\w'])(?:but|however|although|though|whereas)(?![\w'])", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?;\n]")

# Account data stated in chat. A masked value ("ending in 4821", "****4821")
# has no run of digits after the verb, so it never matches.
_DIGITS = r"(?:\d[ -]?){4,}\d"
_ACCOUNT_DATA = [
    _rx(
        r"(?:account|card|routing|iban|aba)\s+(?:number|no\.?|#)(?:\s+on\s+file)?\s*(?:is|was|reads|:)\s*"
        + _DIGITS
    ),
    re.compile(r"(?<![\d-])\d{4}[ -]?\d{4}[ -]?\d{4}[ -]?\d{1,4}(?![\d-])"),  # a card number, named or not
    re.compile(r"(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-])"),  # the SSN layout
    _rx(r"(?:social\s+security(?:\s+number)?|ssn)\s*(?:is|was|:)\s*" + _DIGITS),
    _rx(
        r"(?:balance|available\s+funds|available\s+credit)\s+(?:(?:is|was)(?:\s+(?:now|currently))?|shows|stands\s+at"
        r"|reads|comes\s+to|:)\s*-?\s*\$?\s?\d[\d,.]*"
    ),
    _rx(r"you\s+(?:currently\s+|now\s+)?have\s+\$\s?\d[\d,.]*\s+(?:available|in\s+your)"),
    _rx(
        r"address(?:\s+on\s+file|\s+we\s+have(?:\s+on\s+file)?)?\s*(?:is|was|shows|reads|:)\s*\d+\s+\w+"
        r"|(?:have|has)\s+your\s+(?:\w+\s+)?address\s+as\s+\d+\s+\w+"
    ),
    _rx(
        r"(?:pin|password|passcode|security\s+code|cvv2?|cvc|(?:one[- ]time|verification)\s+code)\s+(?:is|was|:)\s*"
        r"[\"']?[\w!@#$%^&*-]*?\d{3,}[\w!@#$%^&*-]*"
    ),
]


def _guarantee_hits(text: str) -> list[Violation]:
    return [
        Violation("guarantee", m.group(0))
        for rx in _GUARANTEE
        for m in rx.finditer(text)
        if not _negated(text, m.start())
    ]


def _investment_hits(text: str) -> list[Violation]:
    return [
        Violation("investment_advice", m.group(0))
        for rx in _INVESTMENT
        for m in rx.finditer(text)
        if not _inability(text, m.start())
    ]



def _sentence_prefix(text: str, start: int) -> str:
    """The sentence before ``start``, from its last contrast word ("but", "however", ...) on."""
    begin = 0
    for m in _SENTENCE_END.finditer(text, 0, start):
        begin = m.end()
    for m in _CONTRAST.finditer(text, begin, start):
        begin = m.end()
    return text[begin:start]


def _hedged(text: str, m: re.Match[str]) -> bool:
    """True when a claimed outcome is negated ("can't guarantee the fee will be waived") or conditional."""
    if _negated(text, m.start(), window=6):
        return True
    before = {w.lower() for w in _WORD.findall(_sentence_prefix(text, m.start()))}
    after_end = _SENTENCE_END.search(text, m.end())
    after = {w.lower() for w in _WORD.findall(text[m.end():after_end.start() if after_end else len(text)])}
    return bool((before | after) & _HEDGES)


def _outcome_hits(text: str) -> list[Violation]:
    return [
        Violation("outcome_claim", m.group(0))
        for rx in _OUTCOME_CLAIM
        for m in rx.finditer(text)
        if not _hedged(text, m)
    ]


def _account_data_hits(text: str) -> list[Violation]:
    # A stated value is a disclosure whatever surrounds it, so no negation applies.
    return [Violation("account_data", m.group(0)) for rx in _ACCOUNT_DATA for m in rx.finditer(text)]

def _is_request(text: str, m: re.Match[str]) -> bool:
    start = m.start()
    if _negated(text, start):
        return False
    if m.group("asking"):
        return True
    before = [w.lower() for w in _WORD.findall(_clause_prefix(text, start))[-3:]]
    # "could you please confirm ..." asks the customer; "I can confirm ..." is the agent.
    return "you" in before or not (_AGENT_SUBJECTS & set(before))


def _credential_hits(text: str) -> list[Violation]:
    return [Violation("credential_request", m.group(0)) for m in _CREDENTIAL.finditer(text) if _is_request(text, m)]


def _other_customer_hits(text: str) -> list[Violation]:
    hits = []
    for rx in _OTHER_CUSTOMER:
        for m in rx.finditer(text):
            after = {w.lower() for w in _WORD.findall(text[m.end():m.end() + 30])[:2]}
            if not _negated(text, m.start()) and not (after & _PRIVATE_AFTER):
                hits.append(Violation("other_customer", m.group(0)))
    return hits


def _legal_hits(text: str) -> list[Violation]:
    return [
        Violation("legal_threat", m.group(0))
        for rx in _LEGAL
        for m in rx.finditer(text)
        if not _negated(text, m.start())
    ]


def find_violations(response: str) -> list[Violation]:
    """Every compliance rule that fires on ``response`` (empty when compliant).

    Parameters
    ----------
    response : str
        The assistant's reply.

    Returns
    -------
    list of Violation
        ``(rule, matched text)`` pairs, grouped by rule in the order
        guarantee, outcome_claim, investment_advice, credential_request,
        other_customer, account_data, legal_threat. The rules are in the
        module docstring.
    """
    text = _normalize(_check_text(response, "response"))
    return [
        *_guarantee_hits(text),
        *_outcome_hits(text),
        *_investment_hits(text),
        *_credential_hits(text),
        *_other_customer_hits(text),
        *_account_data_hits(text),
        *_legal_hits(text),
    ]


def reward_compliance(response: str) -> float:
    """Compliance channel (the gate): 1.0 when no rule fires, else 0.0."""
    return 0.0 if find_violations(response) else 1.0


# =========================================================================== politeness


class Marker(NamedTuple):
    """One politeness span: ``kind`` is "polite" or "rude"; ``text`` as matched."""

    kind: str
    category: str
    text: str
    start: int
    end: int


_POLITE = {
    "greeting": [r"hi|hello|good\s+(?:morning|afternoon|evening)|dear|greetings"],
    "thanks": [
        (
            r"thank\s+you(?:\s+(?:so|very)\s+much)?(?:\s+for\s+(?:your\s+(?:patience|understanding|message|question)"
            r"|reaching\s+out|contacting\s+us|letting\s+us\s+know|waiting|bringing\s+this\s+to\s+(?:our|my)\s+attention))?"
        ),
        r"thanks(?:\s+(?:so\s+much|a\s+lot))?(?:\s+for\s+(?:your\s+patience|reaching\s+out|waiting|letting\s+us\s+know))?",
        r"many\s+thanks",
        r"(?:i|we)\s+(?:really\s+|truly\s+)?appreciate(?:\s+(?:your\s+(?:patience|understanding)|it))?",
    ],
    "empathy": [
        (
            r"(?:i'm|i\s+am|we're|we\s+are)\s+(?:so\s+|very\s+|really\s+|truly\s+)?sorry"
            r"(?:\s+(?:to\s+hear\s+(?:that|about\s+(?:this|that))|about\s+(?:this|that)|that\s+happened"
            r"|for\s+the\s+(?:inconvenience|trouble|wait|delay|confusion|frustration)))?"
        ),
        r"sorry\s+(?:for|about)\s+the\s+(?:inconvenience|trouble|wait|delay|confusion)",
        r"(?:i|we)\s+(?:sincerely\s+)?apologi[sz]e(?:\s+for\s+the\s+(?:inconvenience|trouble|delay|confusion))?",
        r"(?:my|our)\s+apologies",
        (
            r"(?:i|we)\s+(?:completely\s+|totally\s+|fully\s+)?understand"
            r"(?:\s+(?:your|how|that|why)(?:\s+(?:concern|frustration|worry))?)?"
        ),
        r"i\s+can\s+(?:only\s+)?imagine",
        r"that\s+(?:must\s+be|sounds)\s+(?:really\s+|so\s+|very\s+)?(?:stressful|frustrating|worrying|difficult|upsetting|confusing)",
        r"i\s+know\s+(?:this|that|it)\s+(?:is|can\s+be)\s+(?:stressful|frustrating|worrying|confusing)",
    ],
    "courtesy": [
        r"please",
        r"(?:(?:i'd|i\s+would|i'm|i\s+am|we're|we'd|we\s+are|we\s+would)\s+(?:be\s+)?)?(?:happy|glad|pleased)\s+to\s+help",
        r"my\s+pleasure|you're\s+welcome|you\s+are\s+welcome|of\s+course|certainly|absolutely|no\s+problem|kindly",
    ],
    "closing": [
        r"(?:have|enjoy)\s+a\s+(?:great|good|nice|wonderful|lovely)\s+(?:day|evening|weekend|afternoon)",
        r"take\s+care",
        (
            r"(?:please\s+)?(?:let\s+(?:me|us)\s+know|feel\s+free\s+to\s+(?:reach\s+out|contact\s+us|ask))"
            r"(?:\s+if\s+(?:you\s+have\s+any\s+(?:other\s+|more\s+|further\s+)?questions|there's\s+anything\s+else"
            r"|you\s+need\s+anything\s+else))?"
        ),
        r"is\s+there\s+anything\s+else\s+(?:i|we)\s+can\s+(?:help\s+(?:you\s+)?with|do\s+for\s+you)",
        r"(?:kind|best|warm)\s+regards",
        r"(?:we're|we\s+are|i'm|i\s+am)\s+here\s+(?:to\s+help|for\s+you)",
    ],
}
_RUDE = [
    r"calm\s+down",
    r"(?:(?:that's|that\s+is|it's|it\s+is)\s+)?not\s+(?:my|our)\s+(?:problem|job|concern|responsibility|fault)",
    r"your\s+(?:own\s+)?(?:fault|problem|mistake)",
    r"you\s+should\s+have\s+(?:known|read|checked|paid|been\s+more\s+careful)",
    r"as\s+i\s+(?:already\s+)?(?:said|told\s+you|explained|mentioned)|like\s+i\s+(?:said|told\s+you)",
    r"obviously",
    r"read\s+the\s+(?:terms|manual|fine\s+print|faq)",
    r"deal\s+with\s+it",
    r"(?:i|we)\s+(?:don't|do\s+not)\s+care",
    r"whatever(?=\s*(?:[.!]|$))",
    r"stop\s+(?:complaining|yelling|whining|shouting)",
    r"shut\s+up|stupid|idiot(?:ic)?|dumb",
    r"figure\s+it\s+out(?:\s+yourself)?",
    r"(?:i'm|i\s+am|we're|we\s+are)\s+sorry\s+(?:you\s+feel\s+that\s+way|if\s+you\s+(?:feel|felt|are|were)\s+\w+)",
    r"sorry,?\s+not\s+sorry",
    r"(?:that's|it's)\s+on\s+you|too\s+bad|tough\s+luck|pay\s+up",
]
_POLITENESS_PATTERNS = [
    *((f"polite:{cat}", _rx(p)) for cat, pats in _POLITE.items() for p in pats),
    *(("rude:rude", _rx(p)) for p in _RUDE),
]
_ACRONYMS = frozenset(
    {"FDIC", "SWIFT", "IBAN", "IMAD", "OMAD", "HELOC", "NMLS", "FINRA", "CFPB", "FICO", "SEPA", "ASAP", "NOTE", "USAA", "VISA"}
)
_CAPS_WORD = re.compile(r"\b[A-Z]{4,}\b")
_COURTESY_CAP = 3
_RUDE_PENALTY = 0.5
_SHOUT_PENALTY = 1.0 / 3.0


def politeness_markers(response: str) -> list[Marker]:
    """The courtesy and rude spans found in ``response``, longest first, non-overlapping.

    Returns
    -------
    list of Marker
        In text order. ``category`` is one of greeting, thanks, empathy,
        courtesy, closing (kind "polite") or "rude".
    """
    text = _normalize(_check_text(response, "response"))
    spans = _longest_first(text, _POLITENESS_PATTERNS)
    return [Marker(*s.label.split(":"), text[s.start:s.end], s.start, s.end) for s in spans]


def _is_shouting(text: str) -> bool:
    loud = [w for w in _CAPS_WORD.findall(text) if w not in _ACRONYMS]
    return "!!" in text or len(loud) >= 2


def reward_politeness(response: str) -> float:
    """Raw (ungated) politeness in ``[0, 1]``: ``clip(min(k, 3)/3 - 0.5 r - s/3, 0, 1)``.

    ``k`` is the number of distinct courtesy phrases, ``r`` the number of rude
    spans and ``s`` the shouting flag (see the module docstring).
    """
    markers = politeness_markers(response)
    distinct = {" ".join(m.text.lower().split()) for m in markers if m.kind == "polite"}
    rude = sum(m.kind == "rude" for m in markers)
    score = (
        min(len(distinct), _COURTESY_CAP) / _COURTESY_CAP
        - _RUDE_PENALTY * rude
        - _SHOUT_PENALTY * _is_shouting(response)
    )
    return float(min(1.0, max(0.0, score)))


# =========================================================================== action

_SIGN_OFF = re.compile(
    r"\n\s*(?:(?:best|kind|warm|warmest)\s+(?:regards|wishes)|regards|sincerely|best|cheers|thanks|thank\s+you"
    r"|yours\s+(?:truly|sincerely))\s*,?[ \t]*(?:\n[^\n]*){0,3}$",
    re.IGNORECASE,
)
_DANGLING = frozenset(
    {"and", "or", "but", "the", "a", "an", "because", "your", "our", "my", "their", "if", "than", "via", "under", "whereas"}
)
_TRAILING_JUNK = "\"')]}*_ \t\r\n\u201d\u2019"


def _strip_tail(text: str) -> str:
    """Drop a sign-off block, closing quotes/brackets and trailing emoji or symbols."""
    text = _SIGN_OFF.sub("", text.rstrip())
    while text and (text[-1] in _TRAILING_JUNK or unicodedata.category(text[-1]).startswith("S")):
        text = text[:-1]
    return text


def is_truncated(response: str) -> bool:
    """True when ``response`` stops mid-sentence (the rule is in the module docstring)."""
    text = _strip_tail(_normalize(_check_text(response, "response")))
    if not text or text[-1] not in ".!?" or text.endswith(("...", "\u2026")):
        return True
    if text[-1] == ".":
        words = _WORD.findall(text[-40:])
        return bool(words) and words[-1].lower() in _DANGLING
    return False


_ACTION_VERB = (
    r"open(?:ed|ing)?|fil(?:e|ed|ing)|submit(?:ted|ting)?|escalat(?:e|ed|ing)|freez(?:e|ing)|froze(?:n)?"
    r"|block(?:ed|ing)?|lock(?:ed|ing)?|unlock(?:ed|ing)?|cancell?(?:ed|ing)?|(?:re)?issu(?:e|ed|ing)"
    r"|order(?:ed|ing)?|(?:re)?sen(?:d|t|ding)|updat(?:e|ed|ing)|chang(?:e|ed|ing)|(?:re)?schedul(?:e|ed|ing)"
    r"|set(?:ting)?\s+up|flag(?:ged|ging)?|revers(?:e|ed|ing)|refund(?:ed|ing)?|credit(?:ed|ing)?|waiv(?:e|ed|ing)"
    r"|report(?:ed|ing)?|initiat(?:e|ed|ing)|request(?:ed|ing)?|rais(?:e|ed|ing)|increas(?:e|ed|ing)|creat(?:e|ed|ing)|log(?:ged|ging)?"
    r"|plac(?:e|ed|ing)|arrang(?:e|ed|ing)|enroll?(?:ed|ing)?|process(?:ed|ing)?|reset(?:ting)?|disabl(?:e|ed|ing)"
    r"|clos(?:e|ed|ing)|book(?:ed|ing)?|transferr?(?:ed|ing)?|forward(?:ed|ing)?|mark(?:ed|ing)?|replac(?:e|ed|ing)"
    r"|expedit(?:e|ed|ing)|appl(?:y|ied|ying)|add(?:ed|ing)?|remov(?:e|ed|ing)|connect(?:ed|ing)?|extend(?:ed|ing)?"
    r"|adjust(?:ed|ing)?|correct(?:ed|ing)?|trac(?:e|ed|ing)|recall(?:ed|ing)?|approv(?:e|ed|ing)"
    r"|deactivat(?:e|ed|ing)|refer(?:red|ring)?|assign(?:ed|ing)?|generat(?:e|ed|ing)|e-?mail(?:ed|ing)?|mail(?:ed|ing)?"
)
_SUBJECT = r"(?:i|we)(?:'ve|'ll|'m|'re|'d|\s+have|\s+will|\s+am|\s+are|\s+can|\s+would|\s+shall|\s+just)?"
_AUX = (
    r"(?:\s+(?:just|already|now|also|immediately|personally|gone\s+ahead\s+and|go\s+ahead\s+and|going\s+to|be"
    r"|happy\s+to|glad\s+to|able\s+to|like\s+to))*"
)
# Steps done, being done or offered ("Would you like me to set up a payment plan?"):
# an offer names one specific step the assistant will take on a yes.
_PERFORMED = [
    _rx(rf"{_SUBJECT}{_AUX}\s+(?:{_ACTION_VERB})"),
    _rx(rf"(?:would|do)\s+you\s+(?:like|want)\s+(?:me|us)\s+to\s+(?:{_ACTION_VERB})"),
    _rx(rf"(?:shall|should|can|may)\s+(?:i|we)\s+(?:{_ACTION_VERB})"),
    _rx(rf"let\s+(?:me|us){_AUX}\s+(?:{_ACTION_VERB})"),
    _rx(rf"(?:has|have|had)\s+(?:now\s+|just\s+|already\s+)?been\s+(?:{_ACTION_VERB})"),
    _rx(rf"(?:is|are)\s+(?:now\s+|currently\s+)?being\s+(?:{_ACTION_VERB})"),
]
_REFERENCE = _rx(
    r"(?:reference|ref|case|ticket|dispute|claim|confirmation|tracking)\s*(?:number|no\.?|#|id)?\s*(?:is\s+)?[:#]?\s*"
    r"(?=[a-z0-9-]*\d)[a-z0-9][a-z0-9-]{3,}"
)
_STEP_VERB = (
    r"set\s+up|request|dispute|update|change|view|download|find|check|track|cancel|freeze|lock|unlock|report|make"
    r"|schedule|enroll?|apply|call|contact|visit|reach|log\s+in|sign\s+in|open|go|tap|select|choose|use|submit|file"
    r"|reply|forward|upload|pay|enable|turn\s+on|turn\s+off|see|access|review|order|book|speak|talk|chat|send|print"
    r"|add|remove|switch|move|transfer|block|close|expect|receive|raise|increase|lower|adjust|try"
)
_INSTRUCT = [
    _rx(
        r"you(?:\s+can|\s+could|\s+may|\s+might\s+want\s+to|(?:'ll|\s+will)\s+(?:need|want)\s+to|\s+need\s+to"
        r"|\s+should|\s+just\s+need\s+to|\s+are\s+able\s+to)\s+(?:also\s+|easily\s+|simply\s+|now\s+|then\s+|still\s+|always\s+)?"
        rf"(?:{_STEP_VERB})"
    ),
    _rx(
        r"(?:i|we)(?:'d|\s+would)?\s+(?:recommend|suggest|encourage\s+you\s+to|advise)\s+(?:that\s+you\s+)?"
        r"(?:speak\w*|talk\w*|contact\w*|call\w*|visit\w*|book\w*|schedul\w+|review\w*|check\w*|consult\w*"
        r"|reach\w*|freez\w+|lock\w*|updat\w+|enabl\w+|set\w*\s+up)"
    ),
]
_IMPERATIVE = re.compile(
    r"(?:^|[,;:]\s*|\band\s+|\bthen\s+)\s*(?:please\s+|simply\s+|just\s+|kindly\s+)?"
    r"(?:go\s+to|open|tap|select|click|navigate\s+to|log\s+(?:in|on)(?:to)?|sign\s+in(?:to)?|call|visit|head\s+to"
    r"|choose|forward|report|upload|download|review|use|reply|contact|reach\s+out\s+to|give\s+us\s+a\s+call|set\s+up"
    r"|check|text|chat\s+with|book|schedule|enable|turn\s+on|update|request|follow|speak\s+(?:with|to)|talk\s+to"
    r"|consult)(?![\w'])",
    re.IGNORECASE,
)
# Warnings are steps whose negation is the point ("do not click the link").
_WARNING = re.compile(
    r"(?:^|[,;:]\s*|\band\s+)\s*(?:please\s+)?(?:do\s+not|don't|never)\s+"
    r"(?:click|tap|reply|respond|open|share|give|enter|call|follow|download)(?![\w'])",
    re.IGNORECASE,
)
_VAGUE = [
    _rx(
        r"(?:contact|call|reach\s+out\s+to|get\s+in\s+touch\s+with|visit|e-?mail)\s+(?:us|our\s+(?:\w+\s+)?"
        r"(?:team|support|department|branch|specialists?)|a\s+branch|support|customer\s+service)"
    ),
    _rx(
        r"(?:i|we)(?:'ll|\s+will)\s+(?:look\s+into|investigate|review|check\s+on|follow\s+up|get\s+back\s+to\s+you"
        r"|be\s+in\s+touch|keep\s+you\s+(?:updated|posted))"
    ),
    _rx(r"next\s+steps?"),
]
_DETAIL = [
    _rx(
        r"(?:in|via|through|on|at|under|from|using|into|to)\s+(?:the\s+|our\s+|your\s+)?(?:[\w-]+\s+){0,2}?"
        r"(?:app|website|site|online\s+banking|mobile\s+banking|portal|settings|menu|tab|branch|page|section"
        r"|dashboard|inbox|profile)"
    ),
    re.compile(r"\w\s*(?:>|\u2192|->|\u00bb)\s*\w"),
    re.compile(r"(?<!\d)(?:\+?1[-.\s]?)?\(?\d{3}\)?[-.\s]\d{3}[-.\s]\d{4}(?!\d)"),
    re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+|\b(?:www\.)?[\w-]+\.(?:com|org|net|bank)\b", re.IGNORECASE),
    _rx(r"(?:number|phone\s+number)\s+on\s+the\s+back\s+of\s+your\s+card"),
    _rx(
        r"within\s+(?:the\s+next\s+)?(?:\d+|one|two|three|four|five|six|seven|ten|a\s+few)(?:\s*(?:-|to)\s*\d+)?\s+"
        r"(?:business\s+|working\s+|calendar\s+)?(?:hours?|days?|weeks?)"
        r"|by\s+(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday|tomorrow|tonight"
        r"|end\s+of\s+(?:day|the\s+week|business)|\d{4}-\d{2}-\d{2}"
        r"|(?:jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?\s+\d{1,2})"
        r"|today|this\s+afternoon|in\s+\d+\s+(?:business\s+)?(?:days?|hours?)|on\s+\d{4}-\d{2}-\d{2}"
    ),
]

_CARD_ACTION = (
    r"(?:freez|lock|block|cancel|deactivat)\w*\s+(?:\w+\s+){0,2}?card"
    r"|card\s+(?:is\s+(?:now\s+)?|has\s+(?:now\s+)?been\s+)?(?:frozen|locked|blocked|cancell?ed|deactivated)"
)
_BEST_ACTION = {
    "billing": r"charges?|fees?|bill(?:ing)?|invoice|statement\s+credit|itemi[sz]ed|overcharge\w*|adjustment",
    "payment_delay": (
        r"due\s+date|grace\s+period|late\s+fees?|payment\s+(?:extension|date|arrangement)|extension|autopay|reschedul\w+"
    ),
    "refund_dispute": r"disputes?|chargebacks?|refunds?|claims?|provisional\s+credit",
    "balance_inquiry": (
        r"balances?|available\s+funds|transaction\s+history|recent\s+transactions|pending\s+(?:transactions?|charges?|deposits?)"
    ),
    "lost_card": rf"{_CARD_ACTION}|replacement\s+card|new\s+card|reissu\w*",
    "fraud_alert": (
        rf"{_CARD_ACTION}|fraud\s+(?:claim|case|report|team|department)|unauthori[sz]ed|disputes?"
        r"|new\s+card|replacement\s+card"
    ),
    "payment_plan": (
        r"payment\s+plan|installments?|hardship\s+(?:program|plan|assistance)|monthly\s+payments?|repayment\s+(?:plan|schedule)"
    ),
    "contact_update": (
        r"(?:mailing\s+|home\s+|email\s+)?address|phone\s+number|mobile\s+number|contact\s+(?:details|information|info)|profile"
    ),
    "statement_question": r"e-?statements?|statements?|transaction\s+details|documents(?:\s+section)?",
    "loan_status": r"(?:loan\s+)?application|underwriting|loan\s+(?:officer|team|status|specialist)|decision|appraisal",
    "wire_confirmation": (
        r"wires?|wire\s+transfer|(?:tracking|confirmation|reference|federal|imad|omad|swift|mt103)\s*(?:number|code|reference|id)?"
        r"|recall|trace"
    ),
    "account_cancellation": (
        r"clos(?:e|ed|ing|ure)\s+(?:\w+\s+){0,2}?account|account\s+(?:closure|closing|cancell?ation)"
        r"|final\s+statement|remaining\s+balance|cancel\w*\s+(?:\w+\s+){0,2}?account"
    ),
    "escalation": (
        r"supervisor|manager|specialist|senior\s+\w+|escalat\w+|complaints?\s+(?:team|department|case)"
        r"|formal\s+complaint|call\s*-?back"
    ),
    "investment_question": (
        r"(?:licensed|certified|registered|qualified)\s+(?:financial\s+|investment\s+)?(?:advisor|adviser|professional|planner)s?"
        r"|financial\s+(?:advisor|adviser|planner)s?|wealth\s+(?:management|team|advisor|adviser)"
        r"|investment\s+(?:team|specialist|advisor|adviser)s?"
    ),
    "phishing_attempt": (
        r"phishing|scam\w*|suspicious|fraud\s+team|fraudulent|(?:the|that|this)\s+(?:link|message|email|text|caller|call)"
    ),
    "card_declined": (
        r"declin\w+|(?:spending|daily|card)\s+limit|travel\s+(?:notice|note|alert)|unlock\w*|hold"
        r"|verif\w+\s+(?:the\s+)?(?:transaction|purchase)|try\s+(?:the|your)\s+card\s+again"
    ),
}
_BEST_RX = {kind: _rx(pattern) for kind, pattern in _BEST_ACTION.items()}

_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")


def _any_live(rxs: Sequence[re.Pattern[str]], sentence: str) -> bool:
    """True when some pattern matches ``sentence`` outside a negated clause."""
    return any(not _negated(sentence, m.start()) for rx in rxs for m in rx.finditer(sentence))


class _Sentence(NamedTuple):
    concrete: bool
    step: bool
    best: bool


def _classify(sentence: str, scenario_type: str | None) -> _Sentence:
    performed = _any_live(_PERFORMED, sentence) or bool(_REFERENCE.search(sentence))
    instruct = _any_live(_INSTRUCT, sentence) or bool(_IMPERATIVE.search(sentence))
    detail = any(rx.search(sentence) for rx in _DETAIL)
    concrete = performed or (instruct and detail)
    step = concrete or instruct or _any_live(_VAGUE, sentence) or bool(_WARNING.search(sentence))
    best = scenario_type is not None and step and _any_live([_BEST_RX[scenario_type]], sentence)
    return _Sentence(concrete, step, best)


def _check_scenario_type(scenario_type: Any) -> str | None:
    if scenario_type is None or scenario_type in SCENARIO_TYPES:
        return scenario_type
    raise ValueError(f"unknown scenario_type {scenario_type!r}; expected None or one of {', '.join(SCENARIO_TYPES)}")


def reward_action(response: str, *, scenario_type: str | None = None) -> float:
    """Action channel in ``[0, 1]``: a concrete (and, with a type, fitting) next step.

    Parameters
    ----------
    response : str
        The assistant's reply.
    scenario_type : str or None
        One of :data:`SCENARIO_TYPES` to score the type's best action; None
        scores generic next steps (1.0 concrete, 0.5 vague).

    Returns
    -------
    float
        See the action table in the module docstring; 0 for a cut-off reply.
    """
    scenario_type = _check_scenario_type(scenario_type)
    if is_truncated(response):
        return 0.0
    text = _normalize(response)
    sentences = [_classify(s, scenario_type) for s in _SENTENCE_SPLIT.split(text) if s.strip()]
    concrete = any(s.concrete for s in sentences)
    step = any(s.step for s in sentences)
    if scenario_type is None:
        return 1.0 if concrete else 0.5 if step else 0.0
    # A best-action sentence followed by its concrete details ("... a licensed
    # advisor. You can book one in the app.") counts as concrete too.
    follow = [*(s.concrete for s in sentences[1:]), False]
    if any(s.best and (s.concrete or nxt) for s, nxt in zip(sentences, follow)):
        return 1.0
    if any(s.best for s in sentences):
        return 0.75
    return 0.5 if concrete else 0.25 if step else 0.0


# =========================================================================== length and scoring


def reward_length(response: str, target_tokens: int = 40, tokenize: Any = None) -> float:
    """Length channel (analysis only): ``1 - tanh(|log(n / target_tokens)|)``.

    ``n`` counts tokens with ``tokenize`` (a callable returning tokens, or a
    Hugging Face tokenizer) or whitespace-separated words when it is None.
    An empty reply gets 0.
    """
    _check_text(response, "response")
    if isinstance(target_tokens, bool) or not isinstance(target_tokens, numbers.Real) or not target_tokens > 0:
        raise ValueError(f"target_tokens must be a positive number, got {target_tokens!r}")
    n = count_tokens(response, tokenize)
    if n == 0:
        return 0.0
    return float(1.0 - math.tanh(abs(math.log(n / target_tokens))))


@dataclass(frozen=True)
class FintechRewardConfig:
    """Options of the fintech reward.

    Parameters
    ----------
    target_tokens : int
        Token count at which the analysis-only length channel peaks (40).
    contamination_gamma : float
        Share of the raw politeness a non-compliant reply keeps, in
        ``[0, 1]``: 0 (default) zero-fills it, 1 disables the gate.
    """

    target_tokens: int = 40
    contamination_gamma: float = 0.0

    def __post_init__(self) -> None:
        t = self.target_tokens
        if isinstance(t, bool) or not isinstance(t, numbers.Integral) or t <= 0:
            raise ValueError(f"target_tokens must be a positive int, got {t!r}")
        g = self.contamination_gamma
        if isinstance(g, bool) or not isinstance(g, numbers.Real) or not 0.0 <= g <= 1.0:
            raise ValueError(f"contamination_gamma must be a number in [0, 1], got {g!r}")


def _gate(compliance: float, raw: float, gamma: float) -> float:
    return raw * (compliance + gamma * (1.0 - compliance))


def score_response(
    response: str,
    config: FintechRewardConfig | None = None,
    tokenize: Any = None,
    *,
    scenario_type: str | None = None,
) -> tuple[float, float, float, float, float]:
    """All five fintech channels of one reply.

    Parameters
    ----------
    response : str
        The assistant's reply.
    config : FintechRewardConfig, optional
        Target length and contamination ``gamma``; the defaults when None.
    tokenize : callable or tokenizer, optional
        Token counter for the length channel (whitespace words when None).
    scenario_type : str, optional
        Scenario type for the action channel (generic scoring when None).

    Returns
    -------
    tuple of 5 floats
        ``(compliance, politeness_gated, action, raw_length, raw_politeness)``,
        the released dataset's column order.
    """
    config = _check_config(config)
    compliance, gated, action = _three_channels(response, config, scenario_type)
    raw = reward_politeness(response)
    length = reward_length(response, config.target_tokens, tokenize=tokenize)
    return compliance, gated, action, length, raw


def _three_channels(response: Any, config: FintechRewardConfig, scenario_type: str | None) -> tuple[float, float, float]:
    _check_text(response)
    compliance = reward_compliance(response)
    gated = _gate(compliance, reward_politeness(response), config.contamination_gamma)
    return compliance, gated, reward_action(response, scenario_type=scenario_type)


def _check_config(config: Any) -> FintechRewardConfig:
    if config is None:
        return FintechRewardConfig()
    if not isinstance(config, FintechRewardConfig):
        raise _BadInput(f"config must be a FintechRewardConfig, got {type(config).__name__}")
    return config


def _scenario_type_of(prompt: Any) -> str | None:
    """The scenario type carried by a prompt item, or None for prompts without metadata."""
    if isinstance(prompt, Mapping):
        return _check_scenario_type(prompt.get("scenario_type"))
    return None


class FintechRewardFunction:
    """The fintech reward: ``(compliance, politeness_gated, action)`` per completion.

    Parameters
    ----------
    config : FintechRewardConfig, optional
        Target length and contamination ``gamma`` (defaults when None).
    tokenize : callable or tokenizer, optional
        Token counter for the analysis-only length channel.
    channel_names : tuple of 3 str
        Names of the three channels; compliance (the gate) comes first.

    Notes
    -----
    ``prompt`` may be a prompt item from :func:`make_fintech_prompts` (its
    ``scenario_type`` selects the best action), a string, a message list or
    None (generic action scoring).
    """

    def __init__(
        self,
        config: FintechRewardConfig | None = None,
        tokenize: Any = None,
        channel_names: Sequence[str] = CHANNEL_NAMES,
    ):
        self.config = _check_config(config)
        if tokenize is not None and not (callable(tokenize) or callable(getattr(tokenize, "encode", None))):
            raise ValueError(f"tokenize must be callable or have .encode, got {type(tokenize).__name__}")
        self.tokenize = tokenize
        names = tuple(channel_names)
        if len(names) != 3 or not all(isinstance(n, str) and n for n in names):
            raise ValueError(f"channel_names must be 3 non-empty strings, got {channel_names!r}")
        self.channel_names = names

    @property
    def n_channels(self) -> int:
        return 3

    def __repr__(self) -> str:
        return f"FintechRewardFunction(config={self.config!r}, channel_names={self.channel_names!r})"

    def __call__(self, completion: str, prompt: Any = None) -> tuple[float, float, float]:
        """Score one completion: ``(compliance, politeness_gated, action)``."""
        return _three_channels(completion, self.config, _scenario_type_of(prompt))

    def score_response(self, completion: str, prompt: Any = None) -> tuple[float, float, float, float, float]:
        """All five channels, as :func:`score_response`, with this function's options."""
        return score_response(
            completion, self.config, tokenize=self.tokenize, scenario_type=_scenario_type_of(prompt)
        )

    def score_batch(self, completions: Sequence[str], prompts: Sequence[Any] | None = None) -> np.ndarray:
        """Score ``N`` completions; returns an ``(N, 3)`` float array.

        ``prompts`` is None or a sequence of the same length as ``completions``.
        """
        if isinstance(completions, str) or not isinstance(completions, Sequence):
            raise _BadInput(f"completions must be a sequence of str, got {type(completions).__name__}")
        if prompts is None:
            prompts = [None] * len(completions)
        if len(prompts) != len(completions):
            raise ValueError(f"got {len(completions)} completions but {len(prompts)} prompts")
        out = np.empty((len(completions), 3), dtype=np.float64)
        for i, (completion, prompt) in enumerate(zip(completions, prompts)):
            out[i] = self(completion, prompt)
        return out


# =========================================================================== scenarios


@dataclass(frozen=True)
class Scenario:
    """One customer conversation waiting for the assistant's reply.

    Attributes
    ----------
    scenario_id : str
        ``"fintech-{seed}-{index:05d}"``.
    scenario_type, persona : str
        From :data:`SCENARIO_TYPES` and :data:`PERSONAS`.
    name : str
        The customer's name.
    amount : float
        The amount at stake, in dollars.
    due_date : str
        ISO date (``YYYY-MM-DD``) relevant to the case.
    system_prompt : str
        Instructions for the assistant.
    turns : list of (role, text)
        The conversation so far, ``role`` in {"user", "assistant"}; it starts
        and ends with the customer (1 to 3 customer messages).
    """

    scenario_id: str
    scenario_type: str
    persona: str
    name: str
    amount: float
    due_date: str
    system_prompt: str
    turns: list[tuple[str, str]]


_FIRST_NAMES = (
    "Maria", "James", "Aisha", "Wei", "Carlos", "Priya", "Oluwaseun", "Emma", "Dmitri", "Fatima", "Hiroshi",
    "Sofia", "Liam", "Nadia", "Mateo", "Grace", "Kwame", "Yuki", "Elena", "Omar", "Chloe", "Rahul", "Ingrid", "Tomas",
)
_LAST_NAMES = (
    "Garcia", "Smith", "Okafor", "Chen", "Silva", "Patel", "Adeyemi", "Johnson", "Ivanov", "Haddad", "Tanaka",
    "Rossi", "Murphy", "Kowalski", "Hernandez", "Nguyen",
)
_MERCHANTS = (
    "Skyline Electronics", "FreshMart", "CityRide", "StreamBox", "Harbor Hotel", "QuickFuel", "Pixel Games",
    "Bluebird Airlines", "Corner Pharmacy", "Atlas Furniture",
)

_PERSONA_STYLE = {
    "anxious": (
        ("Hi, I'm really worried.", "Sorry to bother you, but I'm panicking a bit.", "Please help, I'm so stressed about this."),
        ("Is everything going to be okay?", "I can't stop worrying about it.", ""),
        ("Sorry, I'm still nervous.", "Please tell me this can be fixed."),
    ),
    "angry": (
        ("This is unacceptable.", "I'm furious right now.", "Honestly, I'm fed up with this bank."),
        ("Fix it today.", "I want an answer now!", "I've been a customer for years and this is how you treat me?"),
        ("Seriously?", "Stop wasting my time."),
    ),
    "elderly": (
        ("Good morning, dear.", "Hello, I'm not very good with computers, so please bear with me.",
         "Hello, my grandson usually helps me with this."),
        ("Thank you for your patience with me.", "Could you explain it simply, please?", ""),
        ("Oh dear.", "I hope I'm explaining this properly."),
    ),
    "busy_professional": (
        ("Quick question.", "I'm between meetings, so briefly:", "Need this sorted fast."),
        ("Short answer please.", "What's the fastest fix?", ""),
        ("Briefly:", "Still waiting on a fix."),
    ),
    "confused_first_timer": (
        ("Hi, sorry, this is my first bank account and I'm confused.", "Hello, I'm new to all this.",
         "Hi! I don't really understand how this works."),
        ("What does that mean?", "Sorry if this is a silly question.", ""),
        ("Sorry, I don't follow.", "Is that normal?"),
    ),
    "non_native_speaker": (
        ("Hello, my English is not so good, sorry.", "Hello, I write because I have problem.", "Good day, please I need help."),
        ("Please explain me simple.", "Thank you very much for help.", ""),
        ("Sorry, I not understand.", "Please, what I must do?"),
    ),
}

# Per type: amount range in dollars, opening messages, follow-up messages.
_TYPE_TEXT: dict[str, tuple[tuple[float, float], tuple[str, ...], tuple[str, ...]]] = {
    "billing": (
        (5, 600),
        ("My bill shows a charge of {amount} from {merchant} that I don't recognise.",
         "Why was I charged {amount} this month? My bill is usually much lower.",
         "There's a {amount} fee on my latest bill and nobody told me about it."),
        ("It posted on my card ending in {last4}.", "I've never shopped at {merchant}.",
         "Can you just tell me what the fee is for?"),
    ),
    "payment_delay": (
        (50, 3000),
        ("My payment of {amount} is due on {due_date} but my salary is late this month.",
         "I won't be able to pay the {amount} by {due_date}. What happens now?",
         "Can I pay my {amount} credit card bill a week after {due_date}?"),
        ("Will I get a late fee?", "I can pay half now and the rest next week.", "Will this hurt my credit score?"),
    ),
    "refund_dispute": (
        (10, 2000),
        ("{merchant} promised a refund of {amount} three weeks ago and it still hasn't arrived.",
         "I returned an order to {merchant} but the {amount} was never refunded.",
         "I want to dispute a {amount} charge from {merchant}; they never delivered."),
        ("I have the return receipt.", "The merchant stopped answering my emails.", "How long does a dispute take?"),
    ),
    "balance_inquiry": (
        (100, 20000),
        ("What's my current balance? I think it should be around {amount}.",
         "My balance looks lower than {amount} and I don't know why.",
         "How can I check my balance without going to a branch?"),
        ("There's a pending deposit too.", "I just want to be sure before I pay rent on {due_date}.",
         "The app shows a different number than the ATM."),
    ),
    "lost_card": (
        (20, 500),
        ("I lost my debit card ending in {last4} somewhere today.",
         "I think my card was stolen from my bag an hour ago.",
         "I can't find my credit card anywhere and I'm travelling on {due_date}."),
        ("I don't see any strange charges yet.", "How fast can I get a new card?",
         "Can I still pay with my phone in the meantime?"),
    ),
    "fraud_alert": (
        (5, 2500),
        ("I see a {amount} charge from {merchant} that I definitely didn't make.",
         "I got an alert about a {amount} purchase in another country. That wasn't me!",
         "There are three charges from {merchant} on my card ending in {last4} that I never authorised."),
        ("My card is still in my wallet.", "Will I get my money back?", "Should I cancel the card?"),
    ),
    "payment_plan": (
        (300, 15000),
        ("I owe {amount} on my card and I can't pay it all by {due_date}.",
         "I lost my job and need a way to pay off {amount} in smaller amounts.",
         "Is there a payment plan for my {amount} balance?"),
        ("I could manage about a quarter of it each month.", "Will there be extra interest?",
         "I don't want this to go to collections."),
    ),
    "contact_update": (
        (0, 0),
        ("I moved last month and need to update my address.",
         "I have a new phone number and I'm not getting my security codes anymore.",
         "Please change the email on my account, the old one is closed."),
        ("I also want paper statements sent to the new address.", "Can I do it online?",
         "My old number ended in {last4}."),
    ),
    "statement_question": (
        (5, 3000),
        ("My statement shows a {amount} item I don't understand.",
         "Where can I download my statement for last month? I need it by {due_date}.",
         "What does 'ACH DEBIT' mean on my statement next to {amount}?"),
        ("I need it for my tax return.", "It's from {merchant}, I think.", "Can you mail me a copy?"),
    ),
    "loan_status": (
        (2000, 400000),
        ("I applied for a {amount} loan two weeks ago. What's the status?",
         "When will I hear back about my {amount} personal loan application?",
         "My closing date is {due_date}. Is my loan of {amount} approved yet?"),
        ("The seller needs an answer soon.", "Did you get all my documents?", "Can you speed it up?"),
    ),
    "wire_confirmation": (
        (500, 50000),
        ("I sent a wire of {amount} on Monday and the recipient says it hasn't arrived.",
         "Can you confirm my {amount} wire to my landlord went through?",
         "I need proof that my {amount} international wire was sent before {due_date}."),
        ("The recipient's bank is overseas.", "I double-checked the recipient's details.",
         "Can you recall it if something is wrong?"),
    ),
    "account_cancellation": (
        (10, 30000),
        ("I want to close my savings account and move the {amount} elsewhere.",
         "Please cancel my account, I'm switching banks.",
         "How do I close my checking account before {due_date}?"),
        ("Will I get charged a closing fee?", "I still have automatic payments on it.", "Just close it, please."),
    ),
    "escalation": (
        (20, 5000),
        ("This is my third time contacting you about the {amount} charge. I want a manager.",
         "Nobody has fixed my problem in two weeks. Escalate this please.",
         "I want to file a formal complaint about how my {amount} transfer was handled."),
        ("I'm tired of repeating myself.", "Who can actually make a decision here?", "I want this in writing."),
    ),
    "investment_question": (
        (1000, 100000),
        ("Should I put my {amount} savings into crypto or stocks?",
         "Is now a good time to buy shares with my {amount} bonus?",
         "What's the best investment for {amount} that's guaranteed to grow?"),
        ("Just tell me what you would do.", "My friend made a lot on bitcoin.", "I want something safe."),
    ),
    "phishing_attempt": (
        (50, 5000),
        ("I got a text saying my account is locked and asking for my PIN. Is that you?",
         "Someone called saying they're from the bank and asked for my online banking password.",
         "I'm calling for my neighbour {neighbour}; can you tell me her balance and account number?"),
        ("The message had a link to a website.", "I already clicked the link, is that bad?",
         "She said it's fine if you tell me."),
    ),
    "card_declined": (
        (5, 3000),
        ("My card ending in {last4} was declined at {merchant} for {amount}.",
         "Why does my card keep getting declined? I have money in the account.",
         "My card was declined abroad even though I have {amount} available."),
        ("I'm at the checkout right now.", "It worked fine yesterday.", "Did you block it?"),
    ),
}

_ASSISTANT_INTERIM = (
    "Thanks for reaching out, {name}. I'm looking into this now. Could you tell me a little more?",
    "I understand, {name}. Could you tell me the last four digits of the card involved?",
    "Thank you, {name}. Let me check the details on my side. Is there anything else I should know?",
)

SYSTEM_PROMPT = (
    "You are a customer-support assistant for " + BANK_NAME + ", chatting with the customer {name}. "
    "Case: {label}; amount {amount}; relevant date {due_date}. "
    "Be polite and empathetic, keep your reply short (about 40 words), and give one concrete next step: "
    "an action you have taken or offer to take, or exactly where in the " + BANK_NAME + " app or website the "
    "customer can do it. Never promise outcomes or guarantee results: you can submit a request, but never claim "
    "an outcome only the bank can decide (a fee waived, a refund approved, a charge reversed, a limit raised, "
    "an account or card cancelled). Never give investment advice, never ask for full card numbers, PINs, "
    "passwords, security codes, account or routing numbers or Social Security numbers, never state account data "
    "in chat (balances, account or card numbers, Social Security numbers, addresses, passwords or PINs), never "
    "share information about other customers, and never threaten legal action."
)

_STREAM = 0x5EED_F1_7EC4  # names this module's random streams, so other modules' seeds never collide
_BASE_DATE = date(2025, 1, 6)


def _check_count(n: Any, what: str = "n") -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise _BadInput(f"{what} must be a non-negative int, got {n!r}")
    if n < 0:
        raise ValueError(f"{what} must be a non-negative int, got {n}")
    return int(n)


def _block_pick(options: Sequence[str], seed: int, index: int, stream: int) -> str:
    """``options`` in shuffled blocks: every ``len(options)`` consecutive indices from 0 cover each once."""
    block, pos = divmod(index, len(options))
    order = np.random.default_rng([_STREAM, stream, seed, block]).permutation(len(options))
    return options[int(order[pos])]


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _amount(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    lo, hi = bounds
    if hi <= 0:
        return 0.0
    # Log-uniform: small and large amounts are equally common on a log scale.
    return round(float(math.exp(rng.uniform(math.log(lo), math.log(hi)))), 2)


def _persona_message(rng: np.random.Generator, persona: str, body: str, *, first: bool) -> str:
    openers, closers, fillers = _PERSONA_STYLE[persona]
    if first:
        parts = (_pick(rng, openers), body, _pick(rng, closers))
    else:
        parts = (_pick(rng, fillers), body)
    return " ".join(p for p in parts if p)


def _make_turns(rng: np.random.Generator, kind: str, persona: str, fields: Mapping[str, str]) -> list[tuple[str, str]]:
    _, openings, followups = _TYPE_TEXT[kind]
    turns = [("user", _persona_message(rng, persona, _pick(rng, openings).format(**fields), first=True))]
    n_customer = int(rng.integers(1, 4))
    later = rng.permutation(len(followups))[: n_customer - 1]
    for k in later:
        turns.append(("assistant", _pick(rng, _ASSISTANT_INTERIM).format(**fields)))
        turns.append(("user", _persona_message(rng, persona, followups[int(k)].format(**fields), first=False)))
    return turns


def _make_one(seed: int, index: int) -> Scenario:
    kind = _block_pick(SCENARIO_TYPES, seed, index, stream=1)
    persona = _block_pick(PERSONAS, seed, index, stream=2)
    rng = np.random.default_rng([_STREAM, 0, seed, index])
    name = f"{_pick(rng, _FIRST_NAMES)} {_pick(rng, _LAST_NAMES)}"
    amount = _amount(rng, _TYPE_TEXT[kind][0])
    due_date = (_BASE_DATE + timedelta(days=int(rng.integers(0, 365)))).isoformat()
    fields = {
        "name": name.split()[0],
        "amount": f"${amount:,.2f}",
        "due_date": due_date,
        "merchant": _pick(rng, _MERCHANTS),
        "last4": f"{int(rng.integers(0, 10_000)):04d}",
        "neighbour": f"{_pick(rng, _FIRST_NAMES)} {_pick(rng, _LAST_NAMES)}",
    }
    system = SYSTEM_PROMPT.format(
        name=name, label=kind.replace("_", " "), amount=fields["amount"], due_date=due_date
    )
    return Scenario(
        scenario_id=f"fintech-{seed}-{index:05d}",
        scenario_type=kind,
        persona=persona,
        name=name,
        amount=amount,
        due_date=due_date,
        system_prompt=system,
        turns=_make_turns(rng, kind, persona, fields),
    )


def make_scenarios(n: int, seed: int = 0) -> Iterator[Scenario]:
    """``n`` customer scenarios, deterministic in ``seed``.

    Parameters
    ----------
    n : int
        How many (``n >= 0``).
    seed : int
        Non-negative seed. The same ``(n, seed)`` gives the same scenarios in
        every process; a smaller ``n`` gives a prefix of a larger one.

    Returns
    -------
    iterator of Scenario
        Types cycle through shuffled blocks of all 16 :data:`SCENARIO_TYPES`,
        personas through shuffled blocks of the 6 :data:`PERSONAS`.

    Raises
    ------
    ValueError
        If ``n`` or ``seed`` is not a non-negative int (raised at the call,
        not on first iteration).
    """
    n = _check_count(n)
    seed = _check_count(seed, "seed")
    return (_make_one(seed, i) for i in range(n))


def scenario_to_prompt(s: Scenario) -> dict[str, Any]:
    """The chat prompt item of a scenario, with its metadata for the reward function.

    Returns
    -------
    dict
        ``{"messages": [system, user, (assistant, user)...], "scenario_id",
        "scenario_type", "persona", "name", "amount", "due_date"}``.
    """
    if not isinstance(s, Scenario):
        raise _BadInput(f"expected a Scenario, got {type(s).__name__}")
    messages = [{"role": "system", "content": s.system_prompt}]
    messages += [{"role": role, "content": text} for role, text in s.turns]
    return {
        "messages": messages,
        "scenario_id": s.scenario_id,
        "scenario_type": s.scenario_type,
        "persona": s.persona,
        "name": s.name,
        "amount": s.amount,
        "due_date": s.due_date,
    }


def make_fintech_prompts(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` chat prompt items (see :func:`scenario_to_prompt`) from :func:`make_scenarios`."""
    return [scenario_to_prompt(s) for s in make_scenarios(n, seed)]


def make_eval_set(*, n: int = EVAL_SIZE) -> list[dict[str, Any]]:
    """The held-out evaluation prompts: ``n`` (80) items from the fixed :data:`EVAL_SEED`.

    With the default size every scenario type appears exactly 5 times. Ids
    start with ``fintech-987654321-`` so they never collide with training
    prompts made from another seed.
    """
    return make_fintech_prompts(n, EVAL_SEED)
