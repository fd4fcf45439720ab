"""Synthetic (no real person) BHYT and CCCD payloads in the real formats, seeded."""

from __future__ import annotations

import random
from datetime import date, timedelta

FAMILY = ["Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Võ", "Đặng", "Bùi", "Đỗ"]
MIDDLE = ["Văn", "Thị", "Hữu", "Minh", "Ngọc", "Thanh", "Đức", "Quốc", "Thu"]
GIVEN = ["An", "Bích", "Cường", "Dũng", "Hà", "Hải", "Hương", "Khoa", "Linh", "Mai", "Nam", "Phúc",
         "Quang", "Sơn", "Tâm", "Thảo", "Trang", "Tuấn", "Vy", "Yến"]
STREETS = ["Lê Lợi", "Nguyễn Huệ", "Trần Hưng Đạo", "Hai Bà Trưng", "Điện Biên Phủ", "Cách Mạng Tháng Tám"]
CITIES = ["Quận 1, Thành phố Hồ Chí Minh", "Quận Ba Đình, Hà Nội", "Quận Hải Châu, Đà Nẵng",
          "Quận 12, Thành phố Hồ Chí Minh", "Thành phố Huế, Thừa Thiên Huế"]


def _hex(text: str) -> str:
    return text.encode("utf-8").hex()


def _d(day: date) -> str:
    return day.strftime("%d/%m/%Y")


def person(rng: random.Random) -> dict:
    birth = date(1940, 1, 1) + timedelta(days=rng.randrange(0, 30000))
    return {"name": f"{rng.choice(FAMILY)} {rng.choice(MIDDLE)} {rng.choice(GIVEN)}",
            "birth": birth, "sex": rng.choice([1, 2]),
            "address": f"Số {rng.randint(1, 300)} {rng.choice(STREETS)}, {rng.choice(CITIES)}"}


def bhyt(rng: random.Random, *, generation: str | None = None, valid_to: date | None = None,
         today: date = date(2026, 1, 1)) -> str:
    """A BHYT payload, 15-character (2020 layout) or 10-digit (VssID today) generation."""
    p = person(rng)
    generation = generation or rng.choice(["15", "10"])
    province = rng.choice(["79", "01", "48", "46"])
    bhxh = f"{province}{rng.randrange(10**8):08d}"
    valid_from = today - timedelta(days=rng.randrange(30, 900))
    common = [
        _hex(p["name"]), _d(p["birth"]), str(p["sex"]),
        _hex(p["address"]) if generation == "15" else "-",
        f"{province} - {rng.randrange(1, 200):03d}", _d(valid_from),
        _d(valid_to) if valid_to else "-", _d(valid_from),
        f"{province}{rng.randrange(100):02d}{bhxh}",  # management code: province, office, BHXH
        "-", str(rng.randint(4, 7)), _d(valid_from + timedelta(days=5 * 365)),
        f"{rng.randrange(16**16):016x}-{rng.randrange(10**4):04d}",
    ]
    if generation == "15":
        group, level = rng.choice([("DN", 4), ("HT", 3), ("TE", 1), ("CB", 2), ("HS", 4), ("GD", 4)])
        return "|".join([f"{group}{level}{province}{bhxh}", *common, "$"])
    return "|".join([bhxh, *common, str(rng.randint(1, 5)), _hex(rng.choice(CITIES)), "$"])


def cccd(rng: random.Random) -> str:
    p = person(rng)
    century_sex = (0 if p["birth"].year < 2000 else 2) + (p["sex"] - 1)
    number = f"079{century_sex}{p['birth'].year % 100:02d}{rng.randrange(10**6):06d}"
    issued = date(2021, 1, 1) + timedelta(days=rng.randrange(1500))
    return "|".join([number, f"{rng.randrange(10**9):09d}" if rng.random() < 0.5 else "", p["name"],
                     p["birth"].strftime("%d%m%Y"), "Nam" if p["sex"] == 1 else "Nữ", p["address"],
                     issued.strftime("%d%m%Y")])
