"""Issue 12: the validation layer (lab.validate) - one test per bad API call the issue lists, and
a table of bad settings whose messages must name the field, the bad value and what is allowed,
the same through the API, the CLI (exit 2, one line) and trace replay.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from lab import trace, validate
from lab.campaign import sweep
from lab.scenario import EVENT_KINDS, PHASES, Config, Resume
from scenario_kit import main_in_process

REPO = Path(__file__).resolve().parents[2]


def message(call) -> str:
    with pytest.raises(ValueError) as info:
        call()
    return str(info.value)


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    p = main_in_process(argv, capsys)
    return p.returncode, p.stderr


# -- the API calls of the issue ----------------------------------------------------------------

def test_resume_of_a_preset_name_says_how_to_ask_for_it() -> None:
    with pytest.raises(TypeError) as info:
        Resume("workshop")
    text = str(info.value)
    assert "'workshop'" in text and "Resume(preset='workshop')" in text and "Config.from_preset('workshop')" in text
    assert isinstance(info.value, ValueError)  # also a ValueError: the CLI and widgets catch those


def test_resume_of_something_else_says_what_it_takes() -> None:
    with pytest.raises(TypeError, match=r"Resume takes a Config .* got 5 \(int\)"):
        Resume(5)


def test_resume_of_a_config_with_another_preset_is_refused_not_mislabelled() -> None:
    text = message(lambda: Resume(Config(), preset="workshop"))
    assert "preset='workshop'" in text and "'default'" in text and "Config.from_preset('workshop'" in text


def test_resume_of_a_config_with_overrides_still_works_and_names_unknown_ones() -> None:
    r = Resume(Config.from_preset("workshop"), seed=3)
    assert (r.config.preset, r.config.seed, r.config.cpus) == ("workshop", 3, 4)
    assert "unknown setting(s) warp" in message(lambda: Resume(Config.from_preset("workshop"), warp=9))


def test_replay_of_an_empty_dict_is_a_clear_value_error() -> None:
    assert "replay needs a trace" in message(lambda: trace.replay({}))


def test_fix_names_takes_a_single_str_as_one_fix() -> None:
    """`sweep(base, "hlt", ...)` iterated the letters ("unknown fix 'h'"); validate.fix_names
    takes one name as one fix, as compare() does."""
    assert validate.fix_names("hlt") == ["hlt"]
    assert validate.fix_names(("hlt", "init", "hlt")) == ["hlt", "init"]
    assert "unknown fix 'nope'" in message(lambda: validate.fix_names(["hlt", "nope"]))
    assert "fixes must be a fix name or a list" in message(lambda: validate.fix_names(5))
    assert "fixes is empty" in message(lambda: validate.fix_names([]))


def test_sweep_with_a_str_for_fixes_runs_that_fix() -> None:
    base = Config.from_preset("workshop")
    assert [rec["fix"] for rec in sweep(base, "hlt", [0])] == ["hlt"]


def test_inject_as_one_string_is_one_injection() -> None:
    """`Config(inject="nmi:1@0")` iterated the characters ("malformed injection 'n'")."""
    assert Config(inject="nmi:1@0").inject == (("nmi", 1, 0),)
    assert Config(inject=["nmi:1@0", ("smi", 2, 5)]).inject == (("nmi", 1, 0), ("smi", 2, 5))
    assert "malformed injection 'nmi1@0'" in message(lambda: Config(inject="nmi1@0"))


@pytest.mark.parametrize("until, kind, needles", [
    ("fualt", ValueError, ["'fualt'", "is not a phase or an event kind", "fault", "copy"]),
    (1.5e6, TypeError, ["1500000.0", "float", "a time in ns"]),
    (True, TypeError, ["True", "bool"]),
    ([], TypeError, ["[]"]),
    (-1, ValueError, [">= 0 ns", "-1"]),
])
def test_run_until_refuses_what_it_cannot_mean(until, kind, needles) -> None:
    r = Resume(preset="workshop")
    with pytest.raises(kind) as info:
        r.run(until=until)
    for needle in needles:
        assert needle in str(info.value)
    assert r.steps == 0, "nothing ran"


def test_run_until_a_numpy_time_is_a_time() -> None:
    probe = Resume(preset="workshop")
    probe.run()
    half = probe.now // 2
    a, b = Resume(preset="workshop"), Resume(preset="workshop")
    ev_a = a.run(until=np.int64(half))
    ev_b = b.run(until=half)
    assert ev_a == ev_b and a.steps == b.steps and not a.finished


def test_event_kinds_list_every_kind_the_model_emits() -> None:
    """run(until=KIND) refuses unknown kinds, so the list must hold every emit("...") in lab/."""
    emitted = set()
    for path in (REPO / "lab").rglob("*.py"):
        emitted |= set(re.findall(r"""emit\(\s*["']([a-z_]+)["']""", path.read_text()))
    assert emitted and emitted <= set(EVENT_KINDS), sorted(emitted - set(EVENT_KINDS))
    assert not set(EVENT_KINDS) & set(PHASES) - {"phase"}


def test_numpy_integers_are_accepted_as_whole_numbers() -> None:
    c = Config.from_preset("workshop", cpus=np.int64(4), seed=np.uint32(3), ram=np.int64(256 << 20),
                           page_copy_ns=np.int16(900), debug_pagealloc=np.bool_(True),
                           inject=(("nmi", np.int64(1), np.int32(0)),))
    assert (c.cpus, c.seed, c.ram, c.page_copy_ns, c.inject) == (4, 3, 256 << 20, 900, (("nmi", 1, 0),))
    assert all(type(v) is int for v in (c.cpus, c.seed, c.ram, c.page_copy_ns, c.inject[0][1]))
    assert c.debug_pagealloc is True
    json.dumps(c.to_dict())  # plain values: a trace can hold them
    r = Resume(c)
    assert r.cpu(np.int64(1)).id == 1 and r.frame(np.int64(0)).pfn == 0
    assert r.run_state(np.int64(1)) == (r.cpu(1).state, r.cpu(1).cstate)


@pytest.mark.parametrize("cpu", [4, -1, 1.5, "1", True])
def test_a_cpu_that_does_not_exist_is_named_with_what_is_allowed(cpu) -> None:
    r = Resume(Config.from_preset("workshop", cpus=4))
    for ask in (r.cpu, r.run_state, lambda i: r.walk(i, 0)):
        with pytest.raises(ValueError, match=r"no CPU .*; allowed: 0 to 3"):
            ask(cpu)


def test_resume_with_numpy_settings_runs_like_plain_ones() -> None:
    a = Resume(Config.from_preset("workshop", seed=np.int64(2)))
    b = Resume(Config.from_preset("workshop", seed=2))
    a.run(), b.run()
    assert trace.digest(a.events) == trace.digest(b.events)


# -- bad settings: the message names the field, the value and what is allowed -----------------

BAD_SETTINGS = {
    "bool as cpus": (dict(cpus=True), ["cpus", "True", "2 to 512"]),
    "float cpus": (dict(cpus=4.0), ["cpus", "4.0", "2 to 512"]),
    "numpy bool as cpus": (dict(cpus=np.bool_(True)), ["cpus", "True", "2 to 512"]),
    "negative page_copy_ns": (dict(page_copy_ns=-1000), ["page_copy_ns", "-1000", "from 1 to 1_000_000"]),
    "zero page_copy_ns": (dict(page_copy_ns=0), ["page_copy_ns", "got 0", "from 1"]),
    "negative c6_exit_ns": (dict(c6_exit_ns=-1), ["c6_exit_ns", "-1", "from 0"]),
    "negative early noise": (dict(early_noise_pages=-1), ["early_noise_pages", "-1", "from 0"]),
    "negative late noise": (dict(late_noise_pages=-5), ["late_noise_pages", "-5", "from 0"]),
    "negative exact noise": (dict(late_noise_exact=-1), ["late_noise_exact", "-1", "or None"]),
    "zero text pages": (dict(kernel_text_pages=0), ["kernel_text_pages", "got 0", "from 16"]),
    "zero data pages": (dict(kernel_data_pages=0), ["kernel_data_pages", "got 0", "from 16"]),
    "zero bss pages": (dict(kernel_bss_pages=0), ["kernel_bss_pages", "got 0", "from 1"]),
    "kernel past KERNEL_IMAGE_SIZE": (dict(kernel_text_pages=131_072), ["kernel image would end", "512 MiB"]),
    "nosmt without SMT": (dict(nosmt=True, threads_per_core=1), ["nosmt", "threads_per_core=1", "allowed"]),
    "seed too large": (dict(seed=1 << 63), ["seed", str(1 << 63), "2**63 - 1"]),
    "seed as str": (dict(seed="3"), ["seed", "'3'", ">= 0"]),
    "step budget too large": (dict(step_budget=10**12), ["step_budget", "1000000000000", "1_000_000_000"]),
    "too many initcalls": (dict(image_initcalls=10**9), ["image_initcalls", "1000000000", "65536"]),
    "noise larger than ram": (dict(early_noise_pages=1 << 20), ["ram too small", "boot allocations"]),
    "jitter nan": (dict(jitter=float("nan")), ["jitter", "nan", "[0, 1)"]),
    "jitter as str": (dict(jitter="0.1"), ["jitter", "'0.1'", "[0, 1)"]),
    "flag as int": (dict(gbpages=1), ["gbpages", "got 1", "true or false"]),
    "ram as float": (dict(ram=1.5e9), ["ram", "1500000000.0", "allowed"]),
    "image too large": (dict(ram="1T", image="33G"), ["image must be 4K to 32G", "'33G'"]),
    "ram unaligned": (dict(ram=(256 << 20) + 4096), ["ram", "multiple of 2M"]),
    "holes not pairs": (dict(holes=5), ["holes", "got 5", "[start, end] pairs"]),
    "negative hole": (dict(holes=((-4096, 0),)), ["hole [-4096, 0]", "0 <= start < end"]),
    "float hole": (dict(holes=((0.5, 4096),)), ["hole [0.5, 4096]", "multiples of 4096"]),
    "hole below 1 MiB": (dict(holes=((0, 4096),)), ["hole [0x0, 0x1000)", "inside [0x100000"]),
    "hole past RAM": (dict(holes=((0x1000_0000, 1 << 40),)), ["outside RAM", "inside [0x100000, 0x10000000)"]),
    "hole over the kernel": (dict(holes=((0x100_0000, 0x110_0000),)), ["covers the kernel image"]),
    "hole over all RAM": (dict(holes=((0x300_0000, 0x1000_0000),)), ["holes leave", "usable RAM"]),
    "too many holes": (dict(holes=tuple((0x800_0000 + i * 0x2000, 0x800_1000 + i * 0x2000) for i in range(129))),
                       ["holes has 129 ranges", "at most 128"]),
    "e820 end below the kernel": (dict(e820_end_below_4g=0x200_0000), ["e820_end_below_4g 0x2000000", "allowed"]),
    "e820 end unaligned": (dict(e820_end_below_4g=0x8000_0001), ["e820_end_below_4g", "2147483649", "4096"]),
    "injection to a missing CPU": (dict(inject=("nmi:7@0",)), ["('nmi', 7, 0)", "CPU 0 to 3"]),
    "injection pair": (dict(inject=(("nmi", 1),)), ["('nmi', 1)", "triple"]),
    "injection in Arabic digits": (dict(inject=("nmi:١@0",)), ["'nmi:١@0'", "ASCII"]),
    "stray as int": (dict(stray=(5,)), ["stray 5", "nmi, smi, mce"]),
    "preset as dict": (dict(preset={}), ["unknown preset {}", "allowed: default"]),
    "fix as list": (dict(fix=["hlt"]), ["unknown fix ['hlt']", "allowed: mwait"]),
}


@pytest.mark.parametrize("name", list(BAD_SETTINGS))
def test_bad_setting_is_named_with_its_value_and_what_is_allowed(name: str) -> None:
    settings, needles = BAD_SETTINGS[name]
    text = message(lambda: Config(**settings) if "preset" in settings else Config.from_preset("workshop", **settings))
    for needle in needles:
        assert needle in text, (needle, text)


def test_good_limits_are_accepted() -> None:
    Config.from_preset("workshop", seed=(1 << 63) - 1, step_budget=10**9, page_copy_ns=1, c6_exit_ns=0,
                       early_noise_pages=0, late_noise_pages=0, kernel_bss_pages=1)
    Config(cpus=512)
    Config(ram="1T", image="20G")


@pytest.mark.parametrize("argv, needles", [
    (["--nosmt", "--threads-per-core", "1"], ["nosmt with threads_per_core=1"]),
    (["--seed", str(1 << 64)], ["seed", str(1 << 64), "2**63 - 1"]),
    (["--kernel-text-pages", "0"], ["kernel_text_pages", "got 0", "from 16"]),
    (["--image-initcalls", "-1"], ["image_initcalls", "-1", "from 0"]),
    (["--image", "250M"], ["ram too small", "250 MiB", "256 MiB"]),
    (["--inject", "nmi:1"], ["malformed injection 'nmi:1'", "KIND:CPU@TIME_NS"]),
])
def test_cli_refuses_the_same_settings_with_one_line(argv, needles, capsys) -> None:
    code, err = run_cli(["run", "--preset", "workshop", *argv], capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("python -m lab: error: ")
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.mark.parametrize("edit, needles", [
    (lambda c: c.update(holes=[[-4096, 0]]), ["hole [-4096, 0]"]),  # was replayed (exit 1)
    (lambda c: c.update(holes=[[0.5, 4096]]), ["hole [0.5, 4096]"]),  # was "Unknown format code 'x'"
    (lambda c: c.update(inject=[["nmi", 1]]), ["injection ['nmi', 1]"]),  # was "not enough values to unpack"
    (lambda c: c.update(page_copy_ns=-1000), ["page_copy_ns", "-1000"]),
    (lambda c: c.update(cpus=True), ["cpus", "True"]),
])
def test_replay_refuses_a_sealed_trace_with_a_bad_config(edit, needles, tmp_path: Path, capsys) -> None:
    r = Resume(preset="workshop", fix="hlt", seed=1)
    r.run()
    data = trace.export(r)
    edit(data["config"])
    trace.seal(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    code, err = run_cli(["replay", str(path)], capsys)
    assert code == 2, err
    line, = err.strip().splitlines()
    assert "trace file" in line and "bad.json" in line and "trace config is not valid" in line
    for needle in needles:
        assert needle in line, (needle, line)


def test_every_field_has_a_spec() -> None:
    import dataclasses
    assert set(validate.FIELDS) == {f.name for f in dataclasses.fields(Config)}


def test_docs_limits_table_matches_the_code() -> None:
    """docs/limits.md states the limits the code checks (and the README links it)."""
    from lab import campaign
    from lab.hw.machine import MAX_CPUS
    from widgets.memory_map import MAX_BINS, MIN_BINS

    doc = (REPO / "docs" / "limits.md").read_text()
    for text in (f"2 to {MAX_CPUS}", f"4 KiB to {validate.MAX_IMAGE >> 30} GiB", "64 MiB to 1 TiB", f"{validate.MAX_STEP_BUDGET:,}",
                 f"{validate.MAX_PAGE_COPY_NS:,} ns", f"{validate.MAX_INITCALL_PAGES:,} pages",
                 f"{validate.MIN_TEXT_PAGES} to {validate.KERNEL_IMAGE_SIZE // 4096:,}",
                 f"at most {validate.MAX_INJECTIONS:,} injections", f"at most {validate.E820_MAX} memory-map",
                 f"{MIN_BINS} to {MAX_BINS:,}", f"at most {trace.MAX_BYTES >> 30} GiB"):
        assert text in doc, text
    assert validate.MAX_SEED == 2**63 - 1 and "0 to 2**63 - 1" in doc
    assert validate.MIN_RAM == 64 << 20 and validate.MAX_RAM == 1 << 40
    runs = getattr(campaign, "MAX_CAMPAIGN_RUNS", None)  # added by the campaign work (issue 11)
    assert f"MAX_CAMPAIGN_RUNS` = {runs or 10_000_000:,} runs" in doc
    assert "docs/limits.md" in (REPO / "README.md").read_text()


def test_compare_refuses_a_seed_too_large_instead_of_marking_every_cell_inapplicable() -> None:
    from lab import compare
    text = message(lambda: compare.compare("workshop", ["hlt"], ["copy stores"], seeds=[1 << 64]))
    assert "at most 2**63 - 1" in text and str(1 << 64) in text
