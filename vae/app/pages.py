"""The two face pages, the latent explorer's (served by vae.app.server) and the exported one (written by vae.export):
one template, static/faces.html, and one script, static/faces.js, that both use.

Each page keeps its own parts in its index.html, a `<template data-slot="name">` for each `$name` of the template;
render() fills them in. Plain Python, so the web export needs no Flask.
"""
from __future__ import annotations

import re
import textwrap
from pathlib import Path

STATIC = Path(__file__).with_name("static")
TEMPLATE = STATIC / "faces.html"
SCRIPT = STATIC / "faces.js"  # the helpers both pages' app.js import
# A slot on a line of its own (its part goes in at the slot's indentation, an empty part takes the line away), or in a line.
SLOT = re.compile(r"^(?P<indent>[ \t]*)\$(?P<line>\w+)[ \t]*\n|\$(?P<inline>\w+)", re.M)
PART = re.compile(r'<template data-slot="(\w+)">(.*?)</template>', re.S)


def render(parts: Path) -> str:
    """The page of the parts file `parts`: the template with each of its slots filled in."""
    fills = {name: textwrap.dedent(text).strip("\n") for name, text in PART.findall(parts.read_text(encoding="utf-8"))}
    template = TEMPLATE.read_text(encoding="utf-8")
    slots = {m["line"] or m["inline"] for m in SLOT.finditer(template)}
    if slots != fills.keys():
        raise ValueError(f"{parts} must fill each slot of {TEMPLATE} once: {', '.join(sorted(slots ^ fills.keys()))} differ")

    def fill(match: re.Match) -> str:
        if match["inline"]:
            return fills[match["inline"]]
        return "".join(f"{match['indent']}{line}\n" if line else "\n" for line in fills[match["line"]].splitlines())

    return SLOT.sub(fill, template)
