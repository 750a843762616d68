"""Send malformed requests to the app's render API and check every answer is a clear error.

Each case is a grid spec (or something that is not one) that the app must refuse: broken JSON,
wrong types, huge, negative, zero and NaN numbers, unknown samplers and schedules, 10,000-character
prompts, model names that are paths or URLs, oversized grids, bad axes. Every answer must be an
error whose message says what is wrong (gradio_client raises AppError with the gr.Error text): not
the generic "the app raised an exception", no Python traceback, no server path, and it must name
the problem (each case lists words its message must contain). Then a valid grid must still render.

    python scripts/fuzz_api.py                 # launches `app.py --public` itself, 600 cases
    python scripts/fuzz_api.py --url http://127.0.0.1:7860/ --cases 1000 --seed 3 --json out.json

Exit status 0 when every case passed. tests/test_hardening_input.py runs a sample of the same cases.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parents[1])]

VALID = {"model": "builtin", "prompt": "grinning face", "seed": 7, "cfg": 5, "steps": 2,
         "x": {"axis": "steps", "values": [1, 2]}, "y": {"axis": "sampler", "values": ["Euler"]}}
NUMBER_FIELDS = ("steps", "cfg", "seed", "width", "height", "eta", "s_noise")


@dataclass(frozen=True)
class Case:
    """One malformed request: what predict() sends and words one of which the error must contain."""

    kind: str
    payload: Any
    expect: tuple[str, ...]


def spec(**changes: Any) -> dict[str, Any]:
    out = dict(VALID)
    out.update(changes)
    return out


def dumps(data: Any) -> str:
    return json.dumps(data, allow_nan=True)  # NaN and Infinity as JavaScript writes them


# ---------------------------------------------------------------- the case makers

JSON_ERR = ("not valid JSON", "must be a JSON object")


def broken_json(rng: random.Random) -> Case:
    text = dumps(spec())
    noise = "".join(chr(rng.randrange(32, 0x2FFF)) for _ in range(40))
    choices = [text[: rng.randrange(1, len(text) - 1)], text.replace('"', "'"), text + ",", "{" + text,
               text.replace(":", "=", 1), "", " \n\t", "{'model': 'builtin'}",
               "[" * rng.randrange(10, 100_000), '{"steps": 2,}', "\ufeff" + text[:-1], noise,
               "{" * 50_000 + "}" * 50_000, "undefined", "{steps: 2}"]
    return Case("malformed JSON", rng.choice(choices), JSON_ERR)


def not_an_object(rng: random.Random) -> Case:
    value = rng.choice([[], [spec()], 5, -1.5, "a string", None, True, False, [[[]]], 10**30])
    return Case("JSON that is not an object", dumps(value), ("must be a JSON object",))


def wrong_payload_type(rng: random.Random) -> Case:
    value = rng.choice([5, 2.5, True, None, [1, 2], [spec()], {"a": 1}, spec(), ["{}"], 0])
    return Case("request value not text", value, JSON_ERR)


def unknown_setting(rng: random.Random) -> Case:
    key = rng.choice(["trust_remote_code", "allow_pickle", "custom_pipeline", "__class__", "sampler_name",
                      "Steps", "cfg_scale", "out_dir", "path", "", " ", "x" * rng.randrange(1, 300), "宽度"])
    return Case("unknown setting", dumps(spec(**{key: rng.choice([True, 1, "x", None, []])})),
                ("unknown setting",))


_WRONG = {"int": ["20", [20], {"n": 20}, True, "twenty", 2.5, []],
          "num": ["7", [7], {"v": 7}, False, "seven", []],
          "text": [5, 2.5, [], {"t": 1}, True, None],
          "flag": ["yes", 1, 0, "true", None, []]}
_KIND = {"steps": "int", "seed": "int", "width": "int", "height": "int", "cfg": "num", "eta": "num",
         "s_noise": "num", "prompt": "text", "negative_prompt": "text", "model": "text", "sampler": "text",
         "schedule": "text", "vary_seeds": "flag"}
_KIND_WORDS = {"int": ("whole number",), "num": ("must be a number",),
               "text": ("must be text", "must be a string"), "flag": ("true or false",)}


def wrong_type(rng: random.Random) -> Case:
    field = rng.choice(sorted(_KIND))
    kind = _KIND[field]
    value = rng.choice(_WRONG[kind])
    if kind == "num" and value is False:
        value = True
    if field in ("eta", "s_noise", "width", "height") and value is None:
        value = "x"
    words = _KIND_WORDS[kind] + (("between",) if kind == "int" and value == 2.5 else ())
    return Case("wrong type", dumps(spec(**{field: value})), words)


def huge_number(rng: random.Random) -> Case:
    field, value = rng.choice([
        ("steps", rng.choice([1001, 10**6, 10**30, 2**63, 10**400])),
        ("cfg", rng.choice([100.5, 1e308, 10**400])), ("seed", rng.choice([2**64, 2**200, 10**400])),
        ("width", rng.choice([16385, 10**9, 10**400])), ("height", rng.choice([16385, 2**40])),
        ("cfg", 1.7976931348623157e308)])
    words = ("between", "finite", "too large", "whole number", "from 0 to")
    return Case("huge number", dumps(spec(**{field: value})), words)


def negative_number(rng: random.Random) -> Case:
    field = rng.choice(NUMBER_FIELDS)
    value = rng.choice([-1, -2, -0.5, -10**6, -1e308, -(10**30)])
    if field == "seed" and value == -1:
        value = -2
    if field in ("steps", "width", "height", "seed") and isinstance(value, float):
        value = -3
    return Case("negative number", dumps(spec(**{field: value})), ("between", ">=", "-1 (random)", "finite"))


def zero(rng: random.Random) -> Case:
    choice = rng.choice([spec(steps=0), spec(width=0), spec(height=0), spec(width=0, height=0),
                         spec(x={"axis": "steps", "values": [0, 2]}),
                         spec(x={"axis": "size", "values": "0x64"}),
                         spec(x={"axis": "steps", "values": "1-10 [0]"}),
                         spec(x={"axis": "cfg", "values": "1-10 (+0)"}),
                         spec(x={"axis": "steps", "values": "5-10 (+0)"})])
    return Case("zero", dumps(choice), ("between", ">= 1", "step of 0", "values; use [1]", "no values"))


def not_a_number(rng: random.Random) -> Case:
    field = rng.choice(NUMBER_FIELDS)
    value = rng.choice([float("nan"), float("inf"), float("-inf")])
    axis = rng.choice([None, "cfg", "steps", "eta"])
    data = spec(**{field: value})
    if axis:
        data = spec(x={"axis": axis, "values": rng.choice([[value], "nan, 1", "inf", "1, -inf"])})
    return Case("NaN or infinity", dumps(data), ("finite", "whole number", "not a number", "between", ">="))


def unknown_sampler(rng: random.Random) -> Case:
    name = rng.choice(["Eulr", "euler b", "DPM++ 9M", "DPM++ 2M Karas", "k_euler; rm -rf /", "../Euler",
                       "Euler" * rng.randrange(2, 2000), "🎲", "", "  ", "None", "\x00", "<script>",
                       "Euler\n"])
    where = rng.choice(["fixed", "axis"])
    if name == "Euler\n":
        name = "Euler\nx"
    data = spec(sampler=name) if where == "fixed" else spec(y={"axis": "sampler", "values": [name]})
    return Case("unknown sampler", dumps(data), ("unknown sampler", "non-empty", "sampler"))


def unknown_schedule(rng: random.Random) -> Case:
    name = rng.choice(["karas", "Karass", "cosine", "", "  ", "AYS" * 50, "Align Your Step", "nan", "💥",
                       "$(reboot)", "Automatic; DROP TABLE"])
    if rng.random() < 0.5:
        data = spec(schedule=name)
    else:
        data = spec(x={"axis": "schedule", "values": [name]})
    return Case("unknown schedule", dumps(data), ("unknown schedule", "schedule"))


def long_prompt(rng: random.Random) -> Case:
    n = rng.choice([2001, 10_000, 10_000, 50_000, 100_000])
    text = rng.choice(["a", "cat ", "🐱", "é"]) * n
    field = rng.choice(["prompt", "negative_prompt", "sr", "labels"])
    if field == "sr":
        data = spec(prompt="face", x={"axis": "prompt_sr", "values": ["face", text[:n]]})
    elif field == "labels":  # each prompt short enough, but labels too long to draw quickly
        count = rng.randrange(4, 9)
        values = [f"{i} {text[: 3100 // count + rng.randrange(1000)]}" for i in range(count)]
        data = spec(x={"axis": "negative_prompt", "values": values})
    else:
        data = spec(**{field: text[:n]})
    return Case("10,000-character prompt or labels", dumps(data), ("characters long", "axis labels add up"))


_MODELS = ["/etc/passwd", "../../assets/builtin", "assets/builtin", "~/.ssh/id_rsa", "C:\\Windows\\system32",
           "http://example.com/model.safetensors", "https://huggingface.co/org/model", "file:///etc/passwd",
           "org/repo", "runwayml/stable-diffusion-v1-5", "builtin/../..", "builtin\x00", "./builtin", "/",
           "model.ckpt", "weights.bin", "x.pt", "\\\\server\\share\\m.safetensors", "/proc/self/environ",
           "builtin ; ls", "$(id)", "`id`", "BUILTIN", "builtins", "%2e%2e%2f", "/dev/zero"]


def model_name(rng: random.Random) -> Case:
    name = rng.choice(_MODELS)
    data = spec(model=name) if rng.random() < 0.6 else spec(z={"axis": "model", "values": ["builtin", name]})
    return Case("model name that is a path or URL", dumps(data), ("only runs its own models",))


def oversized(rng: random.Random) -> Case:
    data = rng.choice([
        spec(x={"axis": "steps", "values": "1-100"}),
        spec(x={"axis": "seed", "values": "1-9"}, y={"axis": "cfg", "values": "1-9"}),
        spec(x={"axis": "seed", "values": "1-5"}, y={"axis": "cfg", "values": "1-5"},
             z={"axis": "steps", "values": "1-5"}),
        spec(x={"axis": "steps", "values": "1-1001"}),
        spec(x={"axis": "seed", "values": list(range(1001))}),
        spec(steps=1000, x={"axis": "seed", "values": "1-9"}),
        spec(x={"axis": "steps", "values": "999, 1000"}, y={"axis": "seed", "values": "1-5"}),
        spec(width=4096, height=4096, x=None, y=None),
        spec(width=16384, height=16384, x=None, y=None),
        spec(x={"axis": "size", "values": "2048x2048, 64x64"}, y=None),
        spec(x={"axis": "steps", "values": f"1-{rng.randrange(65, 1000)}"}),
        spec(x={"axis": "seed", "values": f"0-10000 [{rng.randrange(65, 1000)}]"}),
    ])
    return Case("oversized grid", dumps(data), ("the limit is", "at most", "more than", "larger than"))


def bad_axis(rng: random.Random) -> Case:
    data, words = rng.choice([
        (spec(x="steps"), ("must be null or an object",)),
        (spec(x={"axis": "steps"}), ("must be null or an object",)),
        (spec(x={"axis": "steps", "values": [1], "extra": 1}), ("must be null or an object",)),
        (spec(x={"axis": "stepz", "values": [1]}), ("axis",)),
        (spec(x={"axis": 5, "values": [1]}), ("axis name must be text",)),
        (spec(x={"axis": "steps", "values": ""}), ("no values",)),
        (spec(x={"axis": "steps", "values": []}), ("no values",)),
        (spec(x={"axis": "steps", "values": {"a": 1}}), ("must be text or a list",)),
        (spec(x={"axis": "steps", "values": 5}), ("must be text or a list",)),
        (spec(y={"axis": "steps", "values": [1]}), ("on both",)),
        (spec(x={"axis": "prompt_sr", "values": ["zebra", "cat"]}), ("did not find",)),
        (spec(x={"axis": "size", "values": ["big"]}), ("not a size",)),
        (spec(x={"axis": "steps", "values": "1-10 (-1)"}), ("steps away",)),
        (spec(x={"axis": "cfg", "values": '"unclosed'}), ("not a number", "cannot read")),
        (spec(x={"axis": "model", "values": [""]}), ("cannot be empty",)),
        (spec(x={"axis": "prompt_sr", "values": [""]}), ("cannot be empty",)),
        (spec(x={"axis": "steps", "values": [[1]]}), ("whole number",)),
        (spec(x={"axis": "seed", "values": ["1", None]}), ("whole number",)),
    ])
    return Case("bad axis", dumps(data), words)


def bad_size(rng: random.Random) -> Case:
    side = rng.choice([63, 65, 66, 67, 1, 3, 98])
    data = rng.choice([spec(width=side), spec(height=side),
                       spec(x={"axis": "size", "values": f"{side}x64"}, y=None)])
    return Case("size not a multiple of the model's factor", dumps(data), ("not a multiple of",))


def two_at_once(rng: random.Random) -> Case:
    first, second = rng.sample([wrong_type, huge_number, negative_number, not_a_number, unknown_sampler,
                                unknown_schedule, model_name, bad_size], 2)
    a, b = first(rng), second(rng)
    second_changes = {k: v for k, v in json.loads(b.payload).items() if VALID.get(k) != v}
    merged = {**json.loads(a.payload), **second_changes}
    return Case("two problems at once", dumps(merged), a.expect + b.expect)


MAKERS: tuple[Callable[[random.Random], Case], ...] = (
    broken_json, not_an_object, wrong_payload_type, unknown_setting, wrong_type, huge_number,
    negative_number, zero, not_a_number, unknown_sampler, unknown_schedule, long_prompt, model_name,
    oversized, bad_axis, bad_size, two_at_once)


_VARIANTS: dict[str, Callable[[random.Random], Any]] = {
    "prompt": lambda rng: rng.choice(["grinning face", "a red apple", "cat", "", "smiling sun, sky"]),
    "seed": lambda rng: rng.randrange(2**32),
    "cfg": lambda rng: rng.choice([0, 1, 3.5, 5, 7.5, 12]),
    "steps": lambda rng: rng.randrange(1, 5),
    "x": lambda rng: {"axis": "steps", "values": rng.choice([[1, 2], [1, 3], [2, 3], "1-3", "1, 2", [4]])},
    "y": lambda rng: {"axis": "sampler", "values": rng.sample(["Euler", "Euler a", "DPM++ 2M", "Heun"],
                                                              rng.randrange(1, 3))},
}


def vary(case: Case, rng: random.Random) -> Case:
    """The case with the settings it leaves valid set to other valid values, so no two are alike."""
    try:
        data = json.loads(case.payload) if isinstance(case.payload, str) else None
    except (ValueError, RecursionError):
        return case
    if not isinstance(data, dict):
        return case
    for key, make in _VARIANTS.items():
        if key in data and data[key] == VALID[key]:
            data[key] = make(rng)
    return Case(case.kind, dumps(data), case.expect)


def cases(n: int, seed: int = 0) -> list[Case]:
    """n malformed requests, every kind in turn, drawn from a seeded generator (repeatable)."""
    rng = random.Random(seed)
    return [vary(MAKERS[i % len(MAKERS)](rng), rng) for i in range(n)]


# ---------------------------------------------------------------- judging answers

GENERIC = ("has not enabled verbose error reporting", "raised an exception")
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|File \"[^\"]+\", line \d+|^\w*Error:\s*$")
SERVER_PATHS = (str(Path(__file__).resolve().parents[1]),)


def judge(case: Case, error: BaseException | None, extra_paths: tuple[str, ...] = ()) -> str | None:
    """Why the answer to `case` is not acceptable, or None when it is a clear, expected error."""
    from gradio_client.exceptions import AppError

    if error is None:
        return "the request was accepted"
    if not isinstance(error, AppError):
        return f"not an app error: {type(error).__name__}: {str(error)[:200]}"
    message = str(error)
    if len(message.strip()) < 12 or message.strip().lower() in ("error", "none"):
        return f"an error without a reason: {message!r}"
    if any(g in message for g in GENERIC):
        return "the generic 'the app raised an exception' message"
    if TRACEBACK.search(message):
        return "a traceback in the message"
    sent = case.payload if isinstance(case.payload, str) else repr(case.payload)
    for path in SERVER_PATHS + extra_paths:
        if path and path in message and path not in sent:
            return f"the message shows a server path ({path})"
    if not any(word.lower() in message.lower() for word in case.expect):
        return f"the message does not name the problem (wanted one of {case.expect}): {message[:200]!r}"
    return None


def send(client: Any, case: Case, timeout_s: float = 120) -> tuple[BaseException | None, float]:
    """The error the request got (None: it was accepted) and the seconds the answer took."""
    started = time.perf_counter()
    job = client.submit(case.payload, api_name="/render")
    try:
        job.result(timeout=timeout_s)
    except TimeoutError:  # a request the server took on and is still working at
        job.cancel()
        return TimeoutError(f"no answer within {timeout_s:g} s"), time.perf_counter() - started
    except Exception as err:  # judged by the caller
        return err, time.perf_counter() - started
    return None, time.perf_counter() - started


def valid_request_works(client: Any) -> str | None:
    """None when a valid grid renders completely after the fuzzing, else what went wrong."""
    try:
        path, manifest = client.predict(dumps(VALID), api_name="/render")
    except Exception as err:
        return f"the valid request failed: {type(err).__name__}: {err}"
    cells = manifest.get("cells", [])
    complete = all(not c.get("error") and c.get("sha256") for c in cells)
    if len(cells) != 2 or not complete or not Path(path).is_file():
        return f"the valid request gave an incomplete grid: {json.dumps(cells)[:300]}"
    return None


def run(client: Any, all_cases: list[Case], extra_paths: tuple[str, ...] = (),
        progress: Callable[[int], None] | None = None, timeout_s: float = 120) -> dict[str, Any]:
    """Send every case, judge every answer, then check a valid request; returns the figures."""
    by_kind: Counter[str] = Counter()
    failed_by_kind: Counter[str] = Counter()
    failures, seconds, examples = [], [], {}
    for i, case in enumerate(all_cases):
        error, spent = send(client, case, timeout_s)
        seconds.append(spent)
        by_kind[case.kind] += 1
        examples.setdefault(case.kind, str(error)[:160])
        problem = judge(case, error, extra_paths)
        if problem:
            failed_by_kind[case.kind] += 1
            failures.append({"kind": case.kind, "payload": repr(case.payload)[:200], "problem": problem})
        if progress:
            progress(i + 1)
    seconds.sort()
    return {"cases": len(all_cases), "passed": len(all_cases) - len(failures), "failed": len(failures),
            "by_kind": {k: {"sent": v, "failed": failed_by_kind[k]} for k, v in sorted(by_kind.items())},
            "failures": failures, "examples": examples, "valid_after": valid_request_works(client) or "ok",
            "median_s": seconds[len(seconds) // 2] if seconds else None,
            "max_s": seconds[-1] if seconds else None}


def report(figures: dict[str, Any]) -> str:
    lines = ["| kind | sent | clear errors |", "|---|---:|---:|"]
    for kind, row in figures["by_kind"].items():
        lines.append(f"| {kind} | {row['sent']} | {row['sent'] - row['failed']} |")
    lines.append(f"| **all** | **{figures['cases']}** | **{figures['passed']}** |")
    lines.append(f"\nvalid request afterwards: {figures['valid_after']}; answer time median "
                 f"{figures['median_s']:.3f} s, max {figures['max_s']:.3f} s")
    for f in figures["failures"][:20]:
        lines.append(f"FAILED {f['kind']}: {f['problem']} <- {f['payload']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", help="a running app (default: start `app.py --public` on a free port)")
    p.add_argument("--cases", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args(argv)
    from gradio_client import Client

    from scripts.served_app import serve_process

    served = None if args.url else serve_process(["--public"])
    url = args.url or served.url
    try:
        client = Client(url, verbose=False)
        started = time.perf_counter()
        figures = run(client, cases(args.cases, args.seed),
                      progress=lambda i: i % 100 or print(f"{i}/{args.cases}", file=sys.stderr, flush=True))
        figures["wall_s"] = round(time.perf_counter() - started, 1)
        figures["server_alive"] = served.alive() if served else None
    finally:
        if served:
            served.close()
    print(report(figures))
    print(f"server process still running at the end: {figures['server_alive']}; wall {figures['wall_s']} s")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    ok = figures["failed"] == 0 and figures["valid_after"] == "ok" and figures["server_alive"] is not False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
