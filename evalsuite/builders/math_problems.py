"""Grade-school math word problems from the project's own templates.

Each shape draws numbers so that every intermediate result is exact (integers, or money
with cents), computes the answer with ``Fraction`` and writes a worked solution, one line
per step. Shapes come in three levels, interleaved so any prefix (``--limit``) holds a
third of each:

1. one step, small numbers (add, take away, groups of, share, two-digit sums, price × count);
2. two steps, small numbers (gifts, packs, change, sharing, "more than", reading, bills);
3. three to six steps with larger numbers: shopping, rates (speed, work, flow), unit
   conversion, percentages, ages, geometry, inventories, wages.

Level 1 exists because SmolLM2-135M scores 0 on two-step problems (0/51 on the first
version of this set, zero-shot and 3-shot): without it the task has no middle to move.
"""
from __future__ import annotations

import math
import random
from fractions import Fraction as F
from typing import Callable

NAMES = ["Ava", "Ben", "Chloe", "Diego", "Emma", "Farid", "Grace", "Hiro", "Isla", "Jamal", "Kira",
         "Liam", "Maya", "Noah", "Olga", "Priya", "Quinn", "Rosa", "Sam", "Tariq", "Uma", "Victor",
         "Wen", "Ximena", "Yusuf", "Zoe"]
ITEMS = [("notebook", "notebooks"), ("pencil", "pencils"), ("apple", "apples"), ("mug", "mugs"),
         ("ticket", "tickets"), ("sticker", "stickers"), ("candle", "candles"), ("book", "books"),
         ("plant", "plants"), ("towel", "towels"), ("ball", "balls"), ("sandwich", "sandwiches")]


def fmt(x: F) -> str:
    """Exact number as text: integers plainly, others with up to 4 decimals."""
    if x.denominator == 1:
        return str(x.numerator)
    val = f"{float(x):.4f}".rstrip("0").rstrip(".")
    if F(val) != x:
        raise ValueError(f"{x} is not exact with 4 decimals")
    return val


def an(noun: str) -> str:
    """'An apple', 'A mug': the sentence-initial article for a singular noun."""
    return ("An " if noun[0] in "aeiou" else "A ") + noun


def money(x: F) -> str:
    return f"${float(x):.2f}" if x.denominator != 1 else f"${x.numerator}"


class Steps:
    """Collects the worked solution one computation at a time."""

    def __init__(self):
        self.lines: list[str] = []

    def add(self, text: str, value: F) -> F:
        self.lines.append(f"{text} = {fmt(value)}")
        return value


# Level 3: three to six steps, larger numbers.
def shopping(r: random.Random):
    n, (_, a2), (_, b2) = r.choice(NAMES), *r.sample(ITEMS, 2)
    qa, qb = r.randint(2, 9), r.randint(2, 6)
    pa, pb = F(r.randint(2, 30), 4), F(r.randint(3, 15))
    bill = r.choice([50, 100, 200])
    s = Steps()
    ca = s.add(f"{qa} {a2} cost {qa} × {money(pa)}", qa * pa)
    cb = s.add(f"{qb} {b2} cost {qb} × {money(pb)}", qb * pb)
    tot = s.add(f"Total {fmt(ca)} + {fmt(cb)}", ca + cb)
    while tot > bill:
        bill *= 2
    ch = s.add(f"Change {bill} − {fmt(tot)}", bill - tot)
    q = (f"{n} buys {qa} {a2} at {money(pa)} each and {qb} {b2} at {money(pb)} each. "
         f"{n} pays with ${bill}. How much change, in dollars, does {n} get back?")
    return q, s, ch, "shopping"


def savings(r: random.Random):
    n = r.choice(NAMES)
    k = r.randint(2, 5)
    per, weeks = r.randint(5, 25), r.randint(4, 12)
    spent = r.randint(1, per * weeks // 2)
    rest = per * weeks - spent
    spent += rest % k  # make the final share exact
    s = Steps()
    saved = s.add(f"Saved {per} × {weeks}", F(per * weeks))
    left = s.add(f"After spending {saved} − {spent}", saved - spent)
    share = s.add(f"Each share {fmt(left)} ÷ {k}", left / k)
    q = (f"{n} saves ${per} every week for {weeks} weeks, then spends ${spent} on a gift. "
         f"{n} splits the money that is left equally among {k} friends. How many dollars does each friend get?")
    return q, s, share, "rate"


def travel(r: random.Random):
    n = r.choice(NAMES)
    v1, t1 = r.randint(30, 90), r.randint(2, 4)
    v2, mins = r.randint(20, 80), r.choice([30, 45, 90, 120, 150])
    s = Steps()
    d1 = s.add(f"First part {v1} km/h × {t1} h", F(v1 * t1))
    h2 = s.add(f"{mins} minutes in hours {mins} ÷ 60", F(mins, 60))
    d2 = s.add(f"Second part {v2} × {fmt(h2)}", v2 * h2)
    tot = s.add(f"Total distance {fmt(d1)} + {fmt(d2)}", d1 + d2)
    q = (f"{n} drives at {v1} km per hour for {t1} hours, then at {v2} km per hour for {mins} minutes. "
         f"How many kilometers does {n} drive in total?")
    return q, s, tot, "unit_rate"


def recipe(r: random.Random):
    n = r.choice(NAMES)
    g, batches = r.choice([125, 150, 200, 250, 300, 350, 400, 450]), r.randint(2, 12)
    bag = r.choice([1, 2, 5])
    s = Steps()
    total_g = s.add(f"Flour needed {g} × {batches}", F(g * batches))
    kg = s.add(f"In kilograms {fmt(total_g)} ÷ 1000", total_g / 1000)
    bags = -(-kg // bag)  # ceiling: partial bags must be bought whole
    s.lines.append(f"Bags of {bag} kg needed: round {fmt(kg)} ÷ {bag} up = {bags}")
    q = (f"A recipe for one batch of bread uses {g} grams of flour. {n} bakes {batches} batches. "
         f"Flour is sold in {bag} kg bags. How many bags must {n} buy?")
    return q, s, F(bags), "unit_rate"


def factory(r: random.Random):
    per_h, hours, days = r.randint(6, 40), r.randint(4, 9), r.randint(2, 6)
    box = r.choice([4, 5, 6, 8, 10, 12])
    made = per_h * hours * days
    extra = made % box
    s = Steps()
    daily = s.add(f"Per day {per_h} × {hours}", F(per_h * hours))
    total = s.add(f"In {days} days {fmt(daily)} × {days}", daily * days)
    if extra:
        total = s.add(f"Without the {extra} rejected toys {fmt(total)} − {extra}", total - extra)
    boxes = s.add(f"Boxes {fmt(total)} ÷ {box}", total / box)
    rej = f" {extra} of the toys fail inspection." if extra else ""
    q = (f"A machine makes {per_h} toys per hour and runs {hours} hours a day for {days} days.{rej} "
         f"The good toys are packed in boxes of {box}. How many boxes are filled?")
    return q, s, boxes, "rate"


def club(r: random.Random):
    k = r.choice([2, 3, 4, 5])
    pct = r.choice([10, 20, 25, 40, 50, 60, 75])
    total = k * r.randint(4, 20) * (100 // math.gcd(pct, 100))
    s = Steps()
    a = s.add(f"Students in the art club {total} ÷ {k}", F(total, k))
    rest = s.add(f"Not in the art club {total} − {fmt(a)}", total - a)
    b = s.add(f"Music club {pct}% of {fmt(rest)}", rest * pct / 100)
    neither = s.add(f"In neither {fmt(rest)} − {fmt(b)}", rest - b)
    if neither.denominator != 1 or b.denominator != 1:
        return club(r)
    q = (f"A school has {total} students. One {_ordinal(k)} of them are in the art club. Of the rest, "
         f"{pct}% are in the music club. How many students are in neither club?")
    return q, s, neither, "percent"


def ages(r: random.Random):
    a, b, c = r.sample(NAMES, 3)
    cage, mult, diff = r.randint(3, 12), r.randint(2, 4), r.randint(2, 15)
    s = Steps()
    bage = s.add(f"{b}'s age {mult} × {cage}", F(mult * cage))
    aage = s.add(f"{a}'s age {fmt(bage)} + {diff}", bage + diff)
    tot = s.add(f"Sum {fmt(aage)} + {fmt(bage)} + {cage}", aage + bage + cage)
    q = (f"{c} is {cage} years old. {b} is {mult} times as old as {c}. {a} is {diff} years older than {b}. "
         f"What is the sum of their three ages?")
    return q, s, tot, "ages"


def garden(r: random.Random):
    n = r.choice(NAMES)
    length, width, price = r.randint(5, 30), r.randint(3, 20), r.choice([F(5, 2), 4, 6, F(15, 2), 12])
    s = Steps()
    per = s.add(f"Perimeter 2 × ({length} + {width})", F(2 * (length + width)))
    cost = s.add(f"Cost {fmt(per)} × {money(F(price))}", per * price)
    q = (f"{n} wants to fence a rectangular garden that is {length} m long and {width} m wide. "
         f"Fencing costs {money(F(price))} per meter. How many dollars will the fence cost?")
    return q, s, cost, "geometry"


def inventory(r: random.Random):
    item = r.choice(ITEMS)[1]
    stock, mon, mult, deliv = r.randint(120, 400), r.randint(10, 40), r.randint(2, 3), r.randint(20, 90)
    s = Steps()
    tue = s.add(f"Tuesday sales {mult} × {mon}", F(mult * mon))
    sold = s.add(f"Sold in two days {mon} + {fmt(tue)}", mon + tue)
    left = s.add(f"Left {stock} − {fmt(sold)}", stock - sold)
    end = s.add(f"After the delivery {fmt(left)} + {deliv}", left + deliv)
    times = {2: "twice", 3: "three times"}[mult]
    q = (f"A store has {stock} {item}. It sells {mon} on Monday and {times} as many on Tuesday. "
         f"On Wednesday a delivery of {deliv} {item} arrives. How many {item} does the store have now?")
    return q, s, end, "inventory"


def pizza(r: random.Random):
    pizzas, slices, people = r.randint(2, 8), r.choice([6, 8, 10, 12]), r.randint(3, 9)
    total = pizzas * slices
    each = total // people
    s = Steps()
    s.add(f"Slices {pizzas} × {slices}", F(total))
    s.lines.append(f"Each person gets {total} ÷ {people} = {each} whole slices")
    eaten = s.add(f"Eaten {each} × {people}", F(each * people))
    left = s.add(f"Left over {total} − {fmt(eaten)}", total - eaten)
    q = (f"There are {pizzas} pizzas, each cut into {slices} slices. {people} friends share the slices "
         f"equally, each taking as many whole slices as possible. How many slices are left over?")
    return q, s, left, "sharing"


def discount(r: random.Random):
    n, item = r.choice(NAMES), r.choice(ITEMS)
    price, pct, qty = r.randint(8, 80), r.choice([10, 20, 25, 50]), r.randint(2, 6)
    s = Steps()
    off = s.add(f"Discount {pct}% of {money(F(price))}", F(price * pct, 100))
    new = s.add(f"Sale price {price} − {fmt(off)}", price - off)
    tot = s.add(f"For {qty} {item[1]} {qty} × {fmt(new)}", qty * new)
    q = (f"{an(item[0])} normally costs ${price}. It is on sale for {pct}% off. {n} buys {qty} of them "
         f"at the sale price. How many dollars does {n} pay?")
    return q, s, tot, "percent"


def tank(r: random.Random):
    fill, drain = r.randint(6, 20), r.randint(2, 5)
    net = fill - drain
    minutes = r.randint(5, 30)
    cap = net * minutes
    s = Steps()
    rate = s.add(f"Net filling rate {fill} − {drain}", F(net))
    t = s.add(f"Minutes to fill {cap} ÷ {fmt(rate)}", F(cap) / rate)
    hrs = s.add(f"In hours {fmt(t)} ÷ 60", t / 60) if minutes % 15 == 0 else None
    if hrs is not None:
        q_tail = "How many hours does it take to fill the empty tank?"
        ans = hrs
    else:
        q_tail = "How many minutes does it take to fill the empty tank?"
        ans = t
    q = (f"A tank holds {cap} liters. A pipe fills it at {fill} liters per minute while a leak drains "
         f"{drain} liters per minute. {q_tail}")
    return q, s, ans, "unit_rate"


def wages(r: random.Random):
    n = r.choice(NAMES)
    rate, hours, days, ot = r.randint(12, 30), r.randint(4, 8), r.randint(3, 6), r.randint(2, 6)
    s = Steps()
    base = s.add(f"Regular hours {hours} × {days}", F(hours * days))
    pay = s.add(f"Regular pay {fmt(base)} × {rate}", base * rate)
    otr = s.add(f"Overtime rate {rate} × 3 ÷ 2", F(rate * 3, 2))
    otp = s.add(f"Overtime pay {ot} × {fmt(otr)}", ot * otr)
    tot = s.add(f"Total {fmt(pay)} + {fmt(otp)}", pay + otp)
    fee = r.choice([0, 0, 15, 20, 35])
    if fee:  # a sixth step for some of them
        tot = s.add(f"After the union fee {fmt(tot)} − {fee}", tot - fee)
    tail = f" {n} then pays a ${fee} union fee." if fee else ""
    q = (f"{n} earns ${rate} per hour and works {hours} hours a day for {days} days. {n} also works "
         f"{ot} hours of overtime, paid at one and a half times the normal rate.{tail} "
         f"How many dollars does {n} {'have left' if fee else 'earn'}?")
    return q, s, tot, "rate"


# Levels 1 and 2 are short enough to state as (question, kind, worked steps): each step is
# (text, value) and the last value is the answer.
def _worked(question: str, kind: str, *work: tuple[str, int | F]):
    s = Steps()
    values = [s.add(text, F(value)) for text, value in work]
    return question, s, values[-1], kind


# Level 1: one step, small numbers.
def more_of(r: random.Random):
    a, b = r.sample(NAMES, 2)
    item = r.choice(ITEMS)[1]
    x, y = r.randint(2, 9), r.randint(2, 9)
    return _worked(f"{a} has {x} {item}. {b} gives {a} {y} more {item}. How many {item} does {a} have now?",
                   "add_sub", (f"{x} + {y}", x + y))


def give_away(r: random.Random):
    a, item = r.choice(NAMES), r.choice(ITEMS)[1]
    x = r.randint(5, 19)
    y = r.randint(1, x - 1)
    return _worked(f"{a} has {x} {item} and gives {y} of them to a friend. How many {item} does {a} have left?",
                   "add_sub", (f"{x} − {y}", x - y))


def boxes(r: random.Random):
    a, item = r.choice(NAMES), r.choice(ITEMS)[1]
    x, y = r.randint(2, 6), r.randint(2, 6)
    return _worked(f"{a} has {x} boxes with {y} {item} in each box. How many {item} does {a} have?",
                   "multiply", (f"{x} × {y}", x * y))


def share(r: random.Random):
    a, item = r.choice(NAMES), r.choice(ITEMS)[1]
    k, y = r.randint(2, 5), r.randint(2, 6)
    return _worked(f"{a} shares {k * y} {item} equally among {k} friends. How many {item} does each friend get?",
                   "divide", (f"{k * y} ÷ {k}", y))


def two_days(r: random.Random):
    a = r.choice(NAMES)
    x, y = r.randint(12, 60), r.randint(11, 39)
    return _worked(f"{a} read {x} pages on Monday and {y} pages on Tuesday. How many pages did {a} read in total?",
                   "add_sub", (f"{x} + {y}", x + y))


def price(r: random.Random):
    a, item = r.choice(NAMES), r.choice(ITEMS)
    p, k = r.randint(2, 9), r.randint(2, 5)
    return _worked(f"{an(item[0])} costs ${p}. {a} buys {k} {item[1]}. How many dollars does {a} spend?",
                   "multiply", (f"{k} × {p}", p * k))


# Level 2: two steps, small numbers.
def change(r: random.Random):
    a, item = r.choice(NAMES), r.choice(ITEMS)
    k, p = r.randint(2, 4), r.randint(1, 3)
    bill = 10 if k * p < 10 else 20
    return _worked(f"{an(item[0])} costs ${p}. {a} buys {k} {item[1]} and pays with a ${bill} bill. "
                   f"How many dollars of change does {a} get?", "multiply",
                   (f"Cost {k} × {p}", k * p), (f"Change {bill} − {k * p}", bill - k * p))


def share_eat(r: random.Random):
    k, each = r.randint(2, 4), r.randint(2, 5)
    return _worked(f"{k * each} cookies are shared equally among {k} friends. Each friend eats 1 cookie. "
                   f"How many cookies does each friend have left?", "divide",
                   (f"Each gets {k * each} ÷ {k}", each), (f"After eating one {each} − 1", each - 1))


def together(r: random.Random):
    a, b = r.sample(NAMES, 2)
    item = r.choice(ITEMS)[1]
    x, d = r.randint(2, 9), r.randint(1, 6)
    return _worked(f"{a} has {x} {item}. {b} has {d} more {item} than {a}. How many {item} do they have together?",
                   "add_sub", (f"{b} has {x} + {d}", x + d), (f"Together {x} + {x + d}", 2 * x + d))


def gift(r: random.Random):
    a, b = r.sample(NAMES, 2)
    one, item = r.choice(ITEMS)
    have, got, used = r.randint(3, 15), r.randint(2, 10), r.randint(1, 5)
    return _worked(f"{a} has {have} {item}. {b} gives {a} {got} more. Then {a} gives {used} "
                   f"{item if used > 1 else one} to a friend. How many {item} does {a} have now?", "add_sub",
                   (f"After the gift {have} + {got}", have + got),
                   (f"After giving some away {have + got} − {used}", have + got - used))


def packs(r: random.Random):
    n, item = r.choice(NAMES), r.choice(ITEMS)[1]
    per, k, extra = r.randint(2, 10), r.randint(2, 6), r.randint(1, 9)
    return _worked(f"{n} buys {k} packs of {item} with {per} {item} in each pack, and {extra} loose {item}. "
                   f"How many {item} does {n} have?", "multiply",
                   (f"In the packs {k} × {per}", k * per), (f"With the loose ones {k * per} + {extra}", k * per + extra))


def reading(r: random.Random):
    n = r.choice(NAMES)
    per, days = r.randint(5, 20), r.randint(2, 7)
    total = per * days + r.randint(5, 60)
    return _worked(f"A book has {total} pages. {n} reads {per} pages every day for {days} days. "
                   f"How many pages are left to read?", "rate",
                   (f"Pages read {per} × {days}", per * days), (f"Pages left {total} − {per * days}", total - per * days))


def split_bill(r: random.Random):
    people = r.randint(2, 6)
    each = r.randint(3, 20)
    tip = r.randint(2, 12)
    meal = people * each - tip if people * each > tip else people * each
    tip = people * each - meal
    return _worked(f"A meal costs ${meal} and the tip is ${tip}. {people} friends split the total equally. "
                   f"How many dollars does each friend pay?", "divide",
                   (f"Bill with tip {meal} + {tip}", meal + tip), (f"Each pays {meal + tip} ÷ {people}", each))


def _ordinal(k: int) -> str:
    return {2: "half", 3: "third", 4: "fourth", 5: "fifth"}[k]


LEVELS: dict[int, tuple[Callable, ...]] = {
    1: (more_of, give_away, boxes, share, two_days, price),
    2: (gift, change, packs, share_eat, reading, together, split_bill),
    3: (shopping, savings, travel, recipe, factory, club, ages, garden, inventory, pizza, discount, tank,
        wages),
}
SHAPES: dict[str, Callable] = {f.__name__: f for shapes in LEVELS.values() for f in shapes}
LEVEL_OF = {f.__name__: lvl for lvl, shapes in LEVELS.items() for f in shapes}


def build(n: int = 300, seed: int = 1234, *, prefix: str = "math", exclude: set[str] = frozenset()) -> list[dict]:
    """``n`` problems cycling level 1, 2, 3 and the shapes within each level, so any prefix
    (``--limit``) holds a third of each level. ``exclude``: questions never to produce."""
    r = random.Random(seed)
    cursor = {lvl: 0 for lvl in LEVELS}
    rows, seen = [], set(exclude)
    i = 0
    while len(rows) < n:
        lvl = 1 + i % len(LEVELS)
        i += 1
        shapes = LEVELS[lvl]
        shape = shapes[cursor[lvl] % len(shapes)]
        cursor[lvl] += 1
        q, steps, ans, kind = shape(r)
        if q in seen:
            continue
        seen.add(q)
        solution = "\n".join(steps.lines) + f"\nThe answer is {fmt(ans)}."
        rows.append({"id": f"{prefix}-{len(rows):04d}", "question": q, "answer": fmt(ans), "solution": solution,
                     "shape": shape.__name__, "level": lvl, "kind": kind, "steps": len(steps.lines)})
    return rows


def build_fewshot(n: int = 30, seed: int = 4321) -> list[dict]:
    """Worked examples for few-shot prompts: another seed, and none of the test questions."""
    return build(n, seed, prefix="shot", exclude={row["question"] for row in build()})
