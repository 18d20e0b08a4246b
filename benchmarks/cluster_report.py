"""The report of benchmarks/cluster.py: link fit, the model's validation, projections, plots.

    python benchmarks/cluster.py report

Reads benchmarks/results/cluster.json (the measurements), writes
benchmarks/results/cluster_model.json and docs/figures/cluster-*.png, prints the tables of
docs/cluster.md.
"""

from __future__ import annotations

import statistics
from dataclasses import replace

from mpidec import netmodel as M
from mpidec import topology as T
from mpidec.atomic import write_json
from mpidec.figures import pyplot, save
from mpidec.plan import PROFILES

MODEL_BYTES = {"resnet20": 4 * 269_434, "mobilenet_v2": 4 * 2_236_682}  # float32, 10 classes
PROJECTED_WORKERS = (16, 64, 256, 1024)
# (label, bytes, compute seconds per step): a ResNet-50 step on a current GPU, and ResNet-20
PROJECTED_MODELS = (("ResNet-50 (102 MB, 100 ms compute)", 4 * 25.6e6, 0.100),
                    ("ResNet-20 (1.1 MB, 10 ms compute)", 4 * 0.27e6, 0.010))
PROJECTED = [("PmSGD", None), ("LocalSGD", None), ("SignumMV", None), ("DSGD", "ring"),
             ("DSGD", "one_peer_exponential"), ("DSGD", "exponential"), ("ADPSGD", "ring")]


def rate_bits(rate: str) -> float:
    value, unit = float(rate.rstrip("abcdefghijklmnopqrstuvwxyz")), rate.lstrip("0123456789.")
    return value * {"bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9}[unit]


def fit_links(results) -> dict:
    """Latency and the fraction of the tbf rate TCP delivers, from the ping-pongs between
    unslowed hosts; shared memory from a setting with two ranks on a host."""
    latencies, efficiencies, local, rma = [], [], None, []
    for name, entry in results["settings"].items():
        probe = entry["probe"]
        sizes = [int(s) for s in probe["remote"]]
        latency, bandwidth = M.fit_link(sizes, list(probe["remote"].values()))
        entry["fit"] = {"latency": latency, "bandwidth": bandwidth}
        if not entry["slow"]:
            latencies.append(latency)
            efficiencies.append(bandwidth * 8 / rate_bits(entry["rate"]))
            rma.append(probe["average_8_bytes"] / 4)
        if "local" in probe:
            local = M.fit_link([int(s) for s in probe["local"]], list(probe["local"].values()))
    return {"latency": statistics.median(latencies), "efficiency": statistics.median(efficiencies),
            "rma_latency": statistics.median(rma), "local": local}


def network_of(entry, links, efficiency=None) -> M.Network:
    """The model of one setting: the latency and one-sided round trip of this setting's own
    probes (on this shared machine they are the scheduler's and change with its load from
    one setting to the next), and the tbf rate times ``efficiency`` (default: the fraction
    the ping-pongs get, median over the settings)."""
    efficiency = links["efficiency"] if efficiency is None else efficiency
    bandwidth = efficiency * rate_bits(entry["rate"]) / 8
    local = {"local_latency": links["local"][0], "local_bandwidth": links["local"][1]} if links["local"] else {}
    slow = ((entry["slow"][0] - 1, float(entry["slow"][1])),) if entry["slow"] else ()
    return M.Network(entry["hosts"], entry["per_host"], bandwidth=bandwidth, latency=entry["fit"]["latency"],
                     overhead=0.0, rma_latency=entry["probe"]["average_8_bytes"] / 4, slow=slow, **local)


def probed_time(net, kind, nbytes, allreduce) -> float:
    """The model's time of one exchange that benchmarks/cluster.py ``exchange_times`` probes."""
    if kind in ("ring", "one_peer"):
        schedule = T.build("ring" if kind == "ring" else "one_peer_exponential", net.n)
        period = schedule.period or 1
        return sum(M.gossip_round_time(net, schedule.at(t), nbytes) for t in range(period)) / period
    if kind == "allreduce":
        return M.allreduce_time(net, nbytes, allreduce)
    if kind == "vote":
        return M.vote_time(net, int(nbytes // 4))
    # AD-PSGD: every active (even) rank averages with rank - 1 at once
    return M.concurrent_averages_time(net, [(i, (i - 1) % net.n) for i in range(0, net.n, 2)], nbytes)


def fit_exchanges(entry, links) -> dict:
    """Per kind of exchange, the fraction of the tbf rate that makes the model's time of the
    probed exchange equal the measured one (bisection: the time falls as the rate grows).
    TCP through tbf delivers less when every host sends and receives at once (several
    flows per link, ACKs queued behind data) than to one ping-pong."""
    probe, fitted = entry["probe"], {}
    nbytes, allreduce = MODEL_BYTES[entry["runs"][0]["model"]], _allreduce_of(entry)
    for kind, measured in probe.get("exchanges", {}).items():
        low, high = 0.01, 10.0
        for _ in range(60):
            mid = (low * high) ** 0.5
            if probed_time(network_of(entry, links, mid), kind, nbytes, allreduce) > measured:
                low = mid
            else:
                high = mid
        fitted[kind] = high
    return fitted


def _allreduce_of(entry) -> str:
    """The model's allreduce for a setting: what Horovod picks (auto), or Open MPI 4.1's in-place Iallreduce."""
    return "auto" if entry.get("allreduce") == "horovod" else "binomial"


def exchange_kind(run) -> str:
    """Which probed exchange a run's step does: ring, one_peer, allreduce, vote or pairwise."""
    algorithm, _ = exchange(run)
    kind = M.EXCHANGES[algorithm][0]
    if kind == "gossip":
        return "one_peer" if run["topology"] == "one_peer_exponential" else "ring"
    return kind


def exchange(run) -> tuple[str, float]:
    """The model's algorithm and bytes per exchange of a run: a compressed gossip is DSGD's
    round with its payload (a bfloat16 wire: half the model; CHOCO's top-k: k values and k
    int32 indices)."""
    nbytes = MODEL_BYTES[run["model"]]
    options = dict(option.split("=", 1) for option in run.get("options", ()))
    if run["algorithm"] == "CHOCO":
        return "DSGD", nbytes * 2 * float(options["ratio"])
    if options.get("wire_dtype") == "bfloat16":
        return run["algorithm"], nbytes / 2
    return run["algorithm"], nbytes


def label(run) -> str:
    """How the tables name a run: the algorithm, and a compressed wire."""
    options = dict(option.split("=", 1) for option in run.get("options", ()))
    if run["algorithm"] == "CHOCO":
        return f"CHOCO ({options['compressor']} {float(options['ratio']):.0%})"
    return run["algorithm"] + (" (bf16 wire)" if options.get("wire_dtype") == "bfloat16" else "")


def validate(results, links) -> list[dict]:
    """Every measured run: measured step, predicted step (from its own compute time), error."""
    rows = []
    for name, entry in results["settings"].items():
        efficiencies = entry["fit"]["exchanges"] = fit_exchanges(entry, links)
        for run in entry["runs"]:
            if "failed" in run:
                continue
            algorithm, nbytes = exchange(run)
            efficiency = efficiencies.get(exchange_kind(run))
            cost = M.step_cost(network_of(entry, links, efficiency), algorithm, nbytes, run["compute_seconds"],
                               topology=run["topology"], period=4, allreduce=_allreduce_of(entry))
            rows.append({"setting": name, "algorithm": label(run), "topology": run["topology"],
                         "measured": run["step_seconds"], "predicted": cost.step, "compute": run["compute_seconds"],
                         "efficiency": efficiency or links["efficiency"], "error": cost.step / run["step_seconds"] - 1})
    return rows


def time_to_accuracy(results) -> list[dict]:
    rows = []
    for name, entry in results["settings"].items():
        runs = [r for r in entry["runs"] if "failed" not in r]
        base = next(r for r in runs if r["algorithm"] == "PmSGD")
        for run in runs:
            to = run["seconds_to_target"]
            rows.append({"setting": name, "algorithm": label(run), "topology": run["topology"],
                         "step": run["step_seconds"], "step_vs_pmsgd": run["step_seconds"] / base["step_seconds"],
                         "steps_to_target": run["steps_to_target"], "seconds_to_target": to,
                         "to_target_vs_pmsgd": to / base["seconds_to_target"] if to and base["seconds_to_target"] else None,
                         "final_accuracy": run["final_accuracy"]})
    return rows


def project() -> list[dict]:
    profiles = [(key, text, net) for key, (text, net) in PROFILES.items()]
    eth = PROFILES["ethernet25"][1]
    profiles.append(("ethernet25-slow8", "25 Gbit/s Ethernet, one host's link 8x slower", eth))
    rows = []
    for key, text, base in profiles:
        for label, nbytes, compute in PROJECTED_MODELS:
            if key.startswith("ib") and "ResNet-20" in label:
                continue
            for n in PROJECTED_WORKERS:
                hosts = n // base.per_host
                net = replace(base, hosts=hosts, slow=((hosts - 1, 8.0),) if key.endswith("slow8") else ())
                for algorithm, topology in PROJECTED:
                    cost = M.step_cost(net, algorithm, nbytes, compute, topology=topology)
                    rows.append({"profile": key, "profile_text": text, "model": label, "workers": n,
                                 "algorithm": algorithm, "topology": topology, "step": cost.step, "share": cost.share})
    for row in rows:
        base = next(r for r in rows if r["profile"] == row["profile"] and r["model"] == row["model"]
                    and r["workers"] == row["workers"] and r["algorithm"] == "PmSGD")
        row["vs_pmsgd"] = row["step"] / base["step"]
    return rows


def project_to_accuracy(projections, convergence) -> list[dict]:
    """Predicted seconds to the target accuracy: the steps the simulator took at that number
    of workers (benchmarks/cluster_convergence.py) times the projected step; ratio to PmSGD."""
    steps = {(c["split"], c["workers"], c["label"]): c["steps_to_target"] for c in convergence["rows"]}
    rows = []
    for split in dict.fromkeys(c["split"] for c in convergence["rows"]):
        for p in projections:
            if (split, p["workers"], _name(p)) in steps:
                taken = steps[split, p["workers"], _name(p)]
                rows.append({**p, "split": split, "steps_to_target": taken,
                             "seconds_to_target": taken * p["step"] if taken else None})
    for row in rows:
        base = next(r for r in rows if r["split"] == row["split"] and r["profile"] == row["profile"]
                    and r["model"] == row["model"] and r["workers"] == row["workers"] and r["algorithm"] == "PmSGD")
        ok = row["seconds_to_target"] and base["seconds_to_target"]
        row["to_target_vs_pmsgd"] = row["seconds_to_target"] / base["seconds_to_target"] if ok else None
    return rows


def report(path, figures) -> None:
    import json

    results = json.loads(path.read_text())
    links = fit_links(results)
    validation = validate(results, links)
    accuracy = time_to_accuracy(results)
    projections = project()
    convergence_file = path.with_name("cluster_convergence.json")
    convergence = json.loads(convergence_file.read_text()) if convergence_file.exists() else {"rows": []}
    to_accuracy = project_to_accuracy(projections, convergence)
    out = path.with_name("cluster_model.json")
    write_json(out, {"links": links, "validation": validation, "time_to_accuracy": accuracy,
                     "projections": projections, "projected_time_to_accuracy": to_accuracy})
    print(f"links: latency {links['latency'] * 1e3:.2f} ms, TCP delivers {links['efficiency']:.3f} of the tbf rate, "
          f"one-sided round trip {links['rma_latency'] * 1e3:.1f} ms, shared memory {links['local']}")
    for name, entry in results["settings"].items():
        fitted = entry["fit"].get("exchanges") or {}
        print(f"{name}: fraction of the tbf rate per exchange (probes, every rank at once): "
              + (", ".join(f"{k} {v:.2f}" for k, v in fitted.items()) or "not probed"))
    print_tables(validation, accuracy, projections)
    print_projected_accuracy(to_accuracy)
    plot(validation, accuracy, projections, figures)
    print(f"wrote {out} and {figures}/cluster-*.png")


def _name(row) -> str:
    return f"{row['algorithm']}" + (f" ({row['topology']})" if row["topology"] else "")


def print_tables(validation, accuracy, projections) -> None:
    print("\n| setting | algorithm | step ms | vs PmSGD | steps to target | s to target | vs PmSGD | final acc |")
    print("|---|---|---|---|---|---|---|---|")
    for r in accuracy:
        to = f"{r['seconds_to_target']:.1f}" if r["seconds_to_target"] else "not reached"
        ratio = f"{r['to_target_vs_pmsgd']:.2f}" if r["to_target_vs_pmsgd"] else "-"
        print(f"| {r['setting']} | {_name(r)} | {r['step'] * 1e3:.0f} | {r['step_vs_pmsgd']:.2f} | "
              f"{r['steps_to_target']} | {to} | {ratio} | {r['final_accuracy']:.3f} |")
    print("\n| setting | algorithm | compute ms | measured ms | predicted ms | error |")
    print("|---|---|---|---|---|---|")
    for r in validation:
        print(f"| {r['setting']} | {_name(r)} | {r['compute'] * 1e3:.0f} | {r['measured'] * 1e3:.0f} | "
              f"{r['predicted'] * 1e3:.0f} | {r['error']:+.0%} |")
    within = sum(abs(r["error"]) <= 0.25 for r in validation)
    print(f"\nwithin 25%: {within} of {len(validation)}; median |error| "
          f"{statistics.median(abs(r['error']) for r in validation):.0%}")
    print("\n| profile | model | workers | " + " | ".join(_name(dict(algorithm=a, topology=t)) for a, t in PROJECTED) + " |")
    print("|---|---|---|" + "---|" * len(PROJECTED))
    keys = sorted({(r["profile"], r["model"], r["workers"]) for r in projections}, key=lambda k: (k[0], k[1], k[2]))
    for key in keys:
        cells = [r for r in projections if (r["profile"], r["model"], r["workers"]) == key]
        print(f"| {key[0]} | {key[1]} | {key[2]} | "
              + " | ".join(f"{c['step'] * 1e3:.0f} ms ({c['share']:.0%})" for c in cells) + " |")


def print_projected_accuracy(rows) -> None:
    """Steps to the target (simulator) and predicted time to it, as a ratio to PmSGD."""
    names = list(dict.fromkeys(_name(r) for r in rows))
    if not names:
        return
    print("\n| data | profile | model | workers | " + " | ".join(names) + " |")
    print("|---|---|---|---|" + "---|" * len(names))
    for key in dict.fromkeys((r["split"], r["profile"], r["model"], r["workers"]) for r in rows):
        cells = {_name(r): r for r in rows if (r["split"], r["profile"], r["model"], r["workers"]) == key}
        print("| " + " | ".join(map(str, key)) + " | " + " | ".join(
            f"{c['steps_to_target']} steps, {c['seconds_to_target']:.1f} s ({c['to_target_vs_pmsgd']:.2f})"
            if c["seconds_to_target"] else "not reached" for c in (cells[n] for n in names)) + " |")


def plot(validation, accuracy, projections, figures) -> None:
    plt = pyplot()
    settings = list(dict.fromkeys(r["setting"] for r in accuracy))
    fig, axes = plt.subplots(1, len(settings), figsize=(4.2 * len(settings), 3.8), squeeze=False)
    for ax, setting in zip(axes[0], settings):
        rows = [r for r in accuracy if r["setting"] == setting]
        labels = [_name(r).replace(" (", "\n(") for r in rows]
        x = range(len(rows))
        ax.bar([i - 0.2 for i in x], [r["step_vs_pmsgd"] for r in rows], 0.4, label="time per step")
        ax.bar([i + 0.2 for i in x], [r["to_target_vs_pmsgd"] or 0 for r in rows], 0.4, label="time to 90% acc.")
        ax.axhline(1, color="grey", lw=0.8)
        ax.set_xticks(list(x), labels, rotation=90, fontsize=7)
        ax.set_title(setting, fontsize=9)
        ax.set_ylabel("ratio to PmSGD (same run)")
    axes[0][0].legend(fontsize=7)
    save(fig, figures / "cluster-measured.png")

    fig, ax = plt.subplots(figsize=(4.5, 4.2))
    for setting in settings:
        rows = [r for r in validation if r["setting"] == setting]
        ax.scatter([r["measured"] * 1e3 for r in rows], [r["predicted"] * 1e3 for r in rows], label=setting, s=18)
    top = max(max(r["measured"], r["predicted"]) for r in validation) * 1e3 * 1.1
    ax.plot([0, top], [0, top], color="grey", lw=0.8)
    ax.fill_between([0, top], [0, 0.75 * top], [0, 1.25 * top], color="grey", alpha=0.15, label="within 25%")
    ax.set_xlabel("measured ms per step")
    ax.set_ylabel("predicted ms per step")
    ax.legend(fontsize=7)
    save(fig, figures / "cluster-validation.png")

    keys = list(dict.fromkeys((r["profile"], r["model"]) for r in projections))
    fig, axes = plt.subplots(1, len(keys), figsize=(3.8 * len(keys), 3.6), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for algorithm, topology in PROJECTED:
            rows = [r for r in projections if (r["profile"], r["model"]) == key and r["algorithm"] == algorithm
                    and r["topology"] == topology]
            ax.plot([r["workers"] for r in rows], [r["step"] * 1e3 for r in rows], marker="o", ms=3,
                    label=_name(rows[0]))
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("workers")
        ax.set_title(f"{key[0]}\n{key[1]}", fontsize=8)
    axes[0][0].set_ylabel("predicted ms per step")
    axes[0][-1].legend(fontsize=6)
    save(fig, figures / "cluster-projections.png")
