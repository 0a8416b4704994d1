"""Admission control: the estimator against measured peak memory, the limits, the run queue under threads
(the private scratch folders: test_scratch.py)."""
from __future__ import annotations

import os
import threading
import time

import pytest
import torch

from fpxint import ExpansionConfig
from fpxint.admission import AdmissionError, Cancelled, Limits, RunGate, admit, check, estimate, profile
from fpxint.zoo import get_spec


# ----- the estimator --------------------------------------------------------------------------------
def test_profile_counts_the_macs_of_the_model_without_touching_it():
    from fpxint.cost import layer_macs

    spec = get_spec("resnet20")
    model = spec.build().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    prof = profile(model, spec.input_size)
    assert prof.macs == sum(layer_macs(model, spec.input_size).values())  # the cost module's hook count
    assert profile(spec) == prof  # built on the meta device from the spec: the same shapes
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert next(model.parameters()).device.type == "cpu"
    assert prof.params == sum(p.numel() for p in model.parameters())


def test_estimate_grows_with_images_terms_and_expanded_activations():
    prof = profile(get_spec("resnet20"))
    base = ExpansionConfig()
    e1 = estimate(prof, base, 100, 256)
    assert estimate(prof, base, 1000, 256).bytes > e1.bytes and estimate(prof, base, 1000, 256).seconds > e1.seconds
    assert estimate(prof, base.replace(w_terms=6, a_terms=6), 100, 256).seconds > e1.seconds
    assert estimate(prof, base, 100, 256).bytes > estimate(prof, base.replace(level="tensor"), 100, 256).bytes
    assert estimate(prof, base, 100, 256, passes=4).seconds > 3 * (e1.seconds - prof.macs * 100 / 15e9)


# peak memory of real runs, each measured twice in fresh subprocesses (bench.admission's child; the
# worst of the two: peak RSS of one run varies up to 2-3x with where the allocator puts big buffers).
# The estimate must be within 3x of it, either way.
CASES = [
    ("resnet20", {}, 500, 256),
    ("resnet20", {"w_bits": 8, "w_terms": 4, "a_bits": 8, "a_terms": 4, "mode": "integer"}, 32, 32),
    ("resnet18", {"w_terms": 2, "a_terms": 2}, 4, 4),
]


@pytest.mark.parametrize("name,changes,n,batch", CASES)
def test_estimate_is_within_3x_of_measured_peak_memory(name, changes, n, batch):
    from bench.admission import measure

    cfg = ExpansionConfig(**changes)
    est = estimate(profile(get_spec(name)), cfg, n, batch)
    got = max(measure(name, cfg.to_json(), n, batch)["peak_bytes"] for _ in range(2))
    assert got / 3 <= est.bytes <= 3 * got, (est.bytes / 2**20, got / 2**20)


def test_check_names_the_limit_and_what_to_reduce():
    prof = profile(get_spec("resnet18"))
    big = estimate(prof, ExpansionConfig(w_bits=8, w_terms=16, a_bits=8, a_terms=16, mode="integer"), 4, 4)
    with pytest.raises(AdmissionError, match=r"need about .* GB of memory \(limit 1\.0 GB\): reduce the images") as e:
        check(big, Limits(max_run_mb=1024, max_run_seconds=None))
    assert "term pair" in str(e.value) and "\n" not in str(e.value)
    check(big, Limits(max_run_mb=float("inf"), max_run_seconds=None))  # no limit, no refusal
    with pytest.raises(AdmissionError, match="limit 10 s"):
        check(big, Limits(max_run_mb=float("inf"), max_run_seconds=10))


def test_admit_refuses_unless_forced():
    lm_spec = get_spec("digits_cnn")
    tiny = Limits(max_run_mb=0.001, max_run_seconds=None)
    with pytest.raises(AdmissionError):
        admit(lm_spec, ExpansionConfig(), 100, limits=tiny)
    assert admit(lm_spec, ExpansionConfig(), 100, limits=tiny, force=True).bytes > 0


@pytest.mark.parametrize("env,field,value", [
    ({"FPXINT_MAX_RUN_MB": "512"}, "max_run_mb", 512.0),
    ({"FPXINT_MAX_RUN_SECONDS": "off"}, "max_run_seconds", float("inf")),
    ({"FPXINT_MAX_CONCURRENT": "3"}, "max_concurrent", 3),
    ({}, "max_concurrent", max(1, (os.cpu_count() or 2) // 2)),
])
def test_limits_from_the_environment(env, field, value):
    assert getattr(Limits.from_env(env), field) == value


@pytest.mark.parametrize("env", [{"FPXINT_MAX_RUN_MB": "-1"}, {"FPXINT_MAX_CONCURRENT": "two"},
                                 {"FPXINT_MAX_RUN_SECONDS": "nan"}, {"FPXINT_MAX_RUN_MB": "1" * 400}])
def test_bad_limits_raise_one_line_naming_the_variable(env):
    with pytest.raises(ValueError, match=next(iter(env))):
        Limits.from_env(env)


# ----- the queue ---------------------------------------------------------------------------------------
def _start(target, *args) -> threading.Thread:
    t = threading.Thread(target=target, args=args, daemon=True)
    t.start()
    return t


def _until(cond, timeout=10.0):
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.005)


def test_queue_runs_in_arrival_order_with_places_reported():
    gate, order, places, release = RunGate(1), [], {}, threading.Event()

    def first():
        with gate.slot():
            order.append(0)
            release.wait(10)

    def later(i):
        with gate.slot(on_wait=lambda ahead: places.setdefault(i, ahead), poll=0.01):
            order.append(i)

    threads = [_start(first)]
    _until(lambda: gate.running == 1)
    for i in (1, 2, 3):
        threads.append(_start(later, i))
        _until(lambda: gate.waiting == i)  # arrival order is fixed before the next one starts
    release.set()
    for t in threads:
        t.join(10)
    assert order == [0, 1, 2, 3] and places == {1: 0, 2: 1, 3: 2}
    assert gate.running == 0 and gate.waiting == 0


def test_slots_bound_the_runs_at_once():
    gate, lock, now, peak = RunGate(2), threading.Lock(), [0], [0]

    def work():
        with gate.slot(poll=0.01):
            with lock:
                now[0] += 1
                peak[0] = max(peak[0], now[0])
            time.sleep(0.02)
            with lock:
                now[0] -= 1

    threads = [_start(work) for _ in range(8)]
    for t in threads:
        t.join(10)
    assert peak[0] == 2


def test_cancel_leaves_the_queue_and_the_next_one_moves_up():
    gate, release, cancel, ran = RunGate(1), threading.Event(), threading.Event(), []
    outcome = {}

    def holder():
        with gate.slot():
            release.wait(10)

    def waiter(name, cancelled):
        try:
            with gate.slot(cancelled=cancelled, poll=0.01):
                ran.append(name)
        except Cancelled as e:
            outcome[name] = str(e)

    t0 = _start(holder)
    _until(lambda: gate.running == 1)
    t1 = _start(waiter, "a", cancel.is_set)
    _until(lambda: gate.waiting == 1)
    t2 = _start(waiter, "b", None)
    _until(lambda: gate.waiting == 2)
    cancel.set()
    t1.join(10)
    assert outcome == {"a": "cancelled while waiting for a free slot"} and gate.waiting == 1
    release.set()
    for t in (t0, t2):
        t.join(10)
    assert ran == ["b"] and gate.running == 0 and gate.waiting == 0


def test_the_slot_is_released_when_the_run_raises():
    gate = RunGate(1)
    with pytest.raises(MemoryError):
        with gate.slot():
            raise MemoryError("out of memory")
    assert gate.running == 0
    with gate.slot():  # the next run gets it at once
        assert gate.running == 1


def test_an_exception_in_the_wait_callback_leaves_the_queue():
    gate, release = RunGate(1), threading.Event()
    t = _start(_hold, gate, release)
    _until(lambda: gate.running == 1)

    def boom(_ahead):
        raise KeyboardInterrupt  # what Streamlit's Stop does to a script thread, in effect

    with pytest.raises(KeyboardInterrupt):
        with gate.slot(on_wait=boom):
            pass
    assert gate.waiting == 0
    release.set()
    t.join(10)
    assert gate.running == 0


def _hold(gate: RunGate, release: threading.Event) -> None:
    with gate.slot():
        release.wait(10)


def test_the_api_refuses_over_the_limits_unless_forced():
    from fpxint import views
    from fpxint.data import load_data
    from fpxint.zoo import load_model

    lm = load_model("digits_cnn")
    data = load_data("digits", lm.spec, limit=40)
    tiny = Limits(max_run_mb=1, max_run_seconds=None)
    with pytest.raises(AdmissionError, match=r"\(limit 1 MB\)"):
        views.expansion_metrics(lm, data, ExpansionConfig(), "cpu", limits=tiny)
    with pytest.raises(AdmissionError):
        views.accuracy(lm, data, ExpansionConfig(), (2, 4), 3, limits=tiny)
    r = views.expansion_metrics(lm, data, ExpansionConfig(), "cpu", limits=tiny, force=True)
    assert r["n_images"] == 40
    assert views.expansion_metrics(lm, data, ExpansionConfig(), "cpu")["n_images"] == 40  # default limits: fits
