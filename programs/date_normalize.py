"""Write the date a customer's message names in the shop's record format (a hand-written, offline task).

Customers write dates every way people do ("March 3, 2025", "3rd of March 2025", "03.03.2025", ...). The
shop's order system stores them as ISO dates, YYYY-MM-DD, and numeric dates in messages are day-first
(European customers). The seed instruction is what a person would first write ("find the date in the
message"); the record format and the day-first reading are the shop's convention, which only the
metric's feedback reveals. So an instruction carries information here, and the information survives
sampling: it is a format and a rule, not a chain of steps a sampled slip can break. Messages come from
templates (a request x a date in one of several spellings), with order numbers and times as distractors;
the splits are disjoint and the dates spread over four years (constant baseline about 0.01).
"""

from __future__ import annotations

import datetime
import random
import re

import dspy

from fst_prompt import Feedback, Task

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
FORMAT_RULE = ("Dates are recorded as YYYY-MM-DD (four-digit year, two-digit month, two-digit day); numeric dates "
               "in messages are day first (03.04.2025 is 3 April 2025).")


def _ordinal(day: int) -> str:
    suffix = "th" if 11 <= day % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


SPELLINGS = [  # how customers write a date
    lambda d: f"{MONTHS[d.month - 1]} {d.day}, {d.year}",
    lambda d: f"{d.day} {MONTHS[d.month - 1]} {d.year}",
    lambda d: f"the {_ordinal(d.day)} of {MONTHS[d.month - 1]} {d.year}",
    lambda d: f"{MONTHS[d.month - 1][:3]} {_ordinal(d.day)} {d.year}",
    lambda d: f"{d.day:02d}.{d.month:02d}.{d.year}",
    lambda d: f"{d.day}/{d.month}/{d.year}",
]

TEMPLATES = [
    "Can I move my delivery for order {order} to {date}? Any time after {time} works.",
    "I'd like to book the repair of my {product} for {date}, please.",
    "My {product} (order {order}) was supposed to arrive on {date} but nothing came.",
    "Please cancel the appointment I have on {date} at {time}.",
    "I bought a {product} in your shop on {date}; can I still return it?",
    "Could you hold order {order} until {date}? I'm away until then.",
    "The installer for my {product} should come on {date}. Is that still on?",
    "I was charged for order {order} on {date} but I cancelled it before.",
    "We're moving house; please deliver the {product} on {date} instead.",
    "Is the shop open on {date}? I want to pick up order {order} around {time}.",
]
PRODUCTS = ["washing machine", "sofa", "fridge", "bike", "oven", "wardrobe", "dishwasher", "treadmill", "desk",
            "television", "mattress", "boiler"]
OPENERS = ["", "Hi, ", "Hello, ", "Good morning. ", "Hi there! "]
NAMES = ["Anna", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jon", "Kofi", "Lena"]
FIRST_DAY, DAYS = datetime.date(2024, 1, 1), 4 * 365


class DateNormalize(dspy.Signature):
    """Find the date mentioned in the customer's message."""

    message: str = dspy.InputField()
    date: str = dspy.OutputField(desc="the date")


def _message(rng: random.Random, day: datetime.date) -> str:
    text = rng.choice(TEMPLATES).format(date=rng.choice(SPELLINGS)(day), product=rng.choice(PRODUCTS),
                                        order=f"#{rng.randint(10000, 99999)}",
                                        time=f"{rng.randint(8, 17)}:{rng.choice(['00', '15', '30', '45'])}")
    return f"{rng.choice(OPENERS)}{text} Thanks, {rng.choice(NAMES)}"


def splits(seed: int, sizes: tuple[int, int, int]) -> list[list[dspy.Example]]:
    """Train/val/test: disjoint in their dates (so no answer is seen in training), deterministic in the seed."""
    if sum(sizes) > DAYS:
        raise ValueError(f"date_normalize: {sum(sizes)} problems need more than the {DAYS} distinct dates; ask for "
                         f"smaller splits than {sizes}")
    rng = random.Random(f"date_normalize/{seed}")
    days = [FIRST_DAY + datetime.timedelta(days=i) for i in rng.sample(range(DAYS), sum(sizes))]
    out, start = [], 0
    for size in sizes:
        out.append([dspy.Example(message=_message(rng, d), date=d.isoformat()).with_inputs("message")
                    for d in days[start:start + size]])
        start += size
    return out


def iso_dates(reply: str) -> list[str]:
    """The YYYY-MM-DD dates written in a reply, each once, in order."""
    return list(dict.fromkeys(re.findall(r"(?<!\d)\d{4}-\d{2}-\d{2}(?!\d)", reply)))


def metric(gold: dspy.Example, pred: dspy.Prediction) -> Feedback:
    given = str(pred.get("date") or "").strip()
    shown = given if len(given) <= 120 else given[:120] + "..."
    found = iso_dates(given)
    if found == [gold.date]:
        return Feedback(1.0, f"Correct: {gold.date}. {FORMAT_RULE}")
    if not found:
        return Feedback(0.0, f"Wrong: expected {gold.date}, but the reply {shown!r} has no date written as "
                             f"YYYY-MM-DD. {FORMAT_RULE}")
    if len(found) > 1:
        return Feedback(0.0, f"Wrong: the reply {shown!r} gives several dates ({', '.join(found)}); give one. "
                             f"Expected {gold.date}. {FORMAT_RULE}")
    return Feedback(0.0, f"Wrong: expected {gold.date}, the reply gave {found[0]}. {FORMAT_RULE}")


def make_task(seed: int = 0, adapter: str = "text", sizes: tuple[int, int, int] = (256, 128, 128)) -> Task:
    train, val, test = splits(seed, tuple(sizes))
    return Task(name="date_normalize", program=dspy.Predict(DateNormalize), train=train, val=val, test=test,
                metric=metric, adapter=adapter, extra={"seed": seed, "sizes": list(sizes)})
