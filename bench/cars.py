"""Cars of any size for the benchmarks: the default car's battery, alternator and controller, and
as many lamps (spread over controllers of 15 lamps each) as it takes to reach `parts`."""

from __future__ import annotations

from typing import Any

from carlightd import config

LAMPS_PER_CONTROLLER = 15
FUNCTIONS = ("headlamp", "tail", "brake", "turn_left", "turn_right", "reverse", "license_plate")


def car_settings(parts: int, **sections: dict[str, Any]) -> config.Settings:
    base = config.load(config.packaged_default())
    if parts == len(base.components):
        components: list[dict[str, Any]] = [c.model_dump() for c in base.components]
    else:
        components = [
            {"kind": "battery", "id": "battery"},
            {"kind": "alternator", "id": "alternator"},
        ]
        lamps = parts - 2
        controllers = max(1, -(-lamps // (LAMPS_PER_CONTROLLER + 1)))
        lamps -= controllers
        for c in range(controllers):
            components.append({"kind": "controller", "id": f"bcm{c}"})
        for i in range(lamps):
            components.append(
                {
                    "kind": "lamp",
                    "id": f"lamp{i}",
                    "function": FUNCTIONS[i % len(FUNCTIONS)],
                    "technology": "led" if i % 3 == 0 else "incandescent",
                    "power_w": 5.0 + (i % 5) * 10,
                    "controller": f"bcm{i % controllers}",
                }
            )
    raw = base.model_dump(mode="python")
    raw["components"] = components
    for section, values in sections.items():
        raw[section].update(values)
    settings = config.Settings(**raw)
    assert len(settings.components) == parts, (parts, len(settings.components))
    return settings
