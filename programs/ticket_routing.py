"""Route a customer's support message to the team that handles it (a hand-written, offline task).

The help desk has five teams with house names: billing, delivery, tech, accounts, returns. The seed
instruction is what a person would first write ("which team should handle this?"); the team names and
which messages go where are the desk's convention, which only the metric's feedback reveals. So an
instruction carries information here: one that lists the teams and their topics can lift a small model
far above the seed. Messages come from templates (a topic's phrasing x product x detail); the splits are
disjoint and balanced (a fifth of each split per team: constant baseline 0.2).
"""

from __future__ import annotations

import random
import re

import dspy

from fst_prompt import Feedback, Task

TEAMS: dict[str, str] = {  # team -> the messages it handles (said in the feedback of a wrong answer)
    "billing": "charges, invoices, payments and card problems",
    "delivery": "parcels, shipping, tracking and late or missing orders",
    "tech": "the app or website not working: crashes, errors, bugs",
    "accounts": "logging in, passwords, email addresses and account settings",
    "returns": "sending an item back, exchanges, wrong or damaged items",
}

TEMPLATES: dict[str, list[str]] = {
    "billing": [
        "I was charged twice for my {product} order {order}.",
        "Can you send me the invoice for order {order}? I need it for my {product}.",
        "My card payment for the {product} failed but the money left my account {when}.",
        "Why is there an extra fee on my bill for the {product}?",
        "The price I paid for the {product} is higher than the one on the website.",
        "Please update the credit card you charge for my subscription; the old one expired {when}.",
        "I noticed a charge I don't recognise on my statement {when}.",
        "The discount code was not applied to my payment for the {product}.",
    ],
    "delivery": [
        "My {product} (order {order}) still hasn't arrived.",
        "The tracking for order {order} has not updated since I ordered it {when}.",
        "Where is my parcel? I ordered a {product} {when}.",
        "The courier says my {product} was delivered {when} but I never got it.",
        "Can you ship my {product} to a different address? Order {order}.",
        "How long does shipping take for a {product} to my town?",
        "My order {order} is late; it was due {when}.",
        "The driver left my {product} parcel at the wrong house {when}.",
    ],
    "tech": [
        "The app crashes every time I open my orders page.",
        "Your website shows an error when I try to view the {product} page.",
        "The app freezes when I scan the barcode of my {product}.",
        "I get error code {code} on the checkout page.",
        "The page with the {product} manual would not load {when}.",
        "Notifications in the app stopped working {when}.",
        "The search box on your site returns a blank page when I look for a {product}.",
        "The app keeps showing errors and closing on my phone after the update {when}.",
    ],
    "accounts": [
        "I forgot my password and the reset link does not work.",
        "How do I change the email address on my profile?",
        "I can't log in; it says my username is unknown.",
        "Please delete my profile and all my personal data.",
        "I want to change my phone number in my account settings.",
        "My account was locked after too many sign-in attempts {when}.",
        "Someone else may have signed in to my profile {when}; please secure it.",
        "How do I turn on two-factor login for my profile?",
    ],
    "returns": [
        "The {product} I received is damaged; I want to send it back.",
        "I'd like to exchange my {product} for a bigger size.",
        "You sent me the wrong {product} in order {order}.",
        "How do I return a {product} I bought {when}?",
        "The {product} stopped working after two days; can I swap it for a new one?",
        "I need a return label for my {product}, order {order}.",
        "The colour of the {product} is not what I ordered; I want to send it back.",
        "Can I bring the {product} back to a shop instead of posting it?",
    ],
}

PRODUCTS = ["blender", "jacket", "headphones", "desk lamp", "kettle", "backpack", "phone case", "rug",
            "coffee maker", "pair of boots", "tent", "monitor", "toaster", "camera", "sofa cushion", "watch"]
WHEN = ["yesterday", "last week", "on Monday", "two days ago", "this morning", "last month", "on Friday"]
OPENERS = ["", "Hi, ", "Hello, ", "Good morning. ", "Hi there! "]
NAMES = ["Anna", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jon", "Kofi", "Lena"]


class TicketRouting(dspy.Signature):
    """Decide which team should handle the customer's message."""

    message: str = dspy.InputField()
    team: str = dspy.OutputField(desc="the team's name")


def _message(rng: random.Random, team: str) -> str:
    text = rng.choice(TEMPLATES[team]).format(product=rng.choice(PRODUCTS), order=f"#{rng.randint(10000, 99999)}",
                                              when=rng.choice(WHEN), code=rng.randint(100, 999))
    return f"{rng.choice(OPENERS)}{text} Thanks, {rng.choice(NAMES)}"


def splits(seed: int, sizes: tuple[int, int, int]) -> list[list[dspy.Example]]:
    """Train/val/test, disjoint, each cycling through the teams in a shuffled order (balanced prefixes)."""
    rng, seen, out = random.Random(f"ticket_routing/{seed}"), set(), []
    for size in sizes:
        examples = []
        while len(examples) < size:
            for team in rng.sample(list(TEAMS), len(TEAMS)):
                text, tries = _message(rng, team), 0
                while text in seen:
                    text, tries = _message(rng, team), tries + 1
                    if tries > 1000:
                        raise ValueError(f"ticket_routing: the templates ran out of new '{team}' messages after "
                                         f"{len(seen)}; ask for smaller splits than {sizes}")
                seen.add(text)
                examples.append(dspy.Example(message=text, team=team).with_inputs("message"))
        out.append(examples[:size])
    return out


def named_teams(reply: str) -> list[str]:
    """The team names written in a reply, as whole words, case-insensitive, each once."""
    words = set(re.findall(r"[a-z]+", reply.lower()))
    return [t for t in TEAMS if t in words]


def metric(gold: dspy.Example, pred: dspy.Prediction) -> Feedback:
    given = str(pred.get("team") or "").strip()
    shown = given if len(given) <= 120 else given[:120] + "..."
    rule = f"Messages about {TEAMS[gold.team]} go to the '{gold.team}' team."
    names = named_teams(given)
    if names == [gold.team]:
        return Feedback(1.0, f"Correct: '{gold.team}'. {rule}")
    if not names:
        return Feedback(0.0, f"Wrong: expected '{gold.team}', but the reply {shown!r} names none of the "
                             f"help desk's teams. {rule}")
    if len(names) > 1:
        return Feedback(0.0, f"Wrong: the reply {shown!r} names several teams ({', '.join(names)}); give one. "
                             f"Expected '{gold.team}'. {rule}")
    return Feedback(0.0, f"Wrong: expected '{gold.team}', the reply named '{names[0]}'. {rule}")


def make_task(seed: int = 0, adapter: str = "text", sizes: tuple[int, int, int] = (256, 128, 128)) -> Task:
    train, val, test = splits(seed, tuple(sizes))
    return Task(name="ticket_routing", program=dspy.Predict(TicketRouting), train=train, val=val, test=test,
                metric=metric, adapter=adapter, extra={"seed": seed, "sizes": list(sizes)})
