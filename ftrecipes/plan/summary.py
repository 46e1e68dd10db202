"""The plan printed by every dry run and run, and written to plan.json: parameters, memory per
device with its verdict and computed fixes, training time and money, and the launch command."""

from __future__ import annotations

from pathlib import Path

from ftrecipes.plan import memory, params, suggest, time_cost
from ftrecipes.plan.local_config import known_architecture


def build_plan(recipe, run_dir: Path | None = None) -> dict:
    plain = recipe if isinstance(recipe, dict) else _plain(recipe)
    counts, source = params.count(plain["model"]["architecture"], plain["method"]), "architecture numbers"
    local_config = Path(plain["model"].get("path") or "") / "config.json"
    if plain["model"]["source"] == "local" and local_config.is_file():
        arch = known_architecture(local_config)
        counts = (params.count(arch, plain["method"]) if arch is not None
                  else params.count_from_config(local_config.parent, plain["method"]))
        source = str(local_config)
    mem = memory.estimate(plain, counts)
    return {
        "parameters": {"source": source, "total": counts.total, "embedding": counts.embedding,
                       "non_embedding": counts.non_embedding, "trainable": counts.trainable,
                       "trainable_fraction": counts.trainable_fraction},
        "memory_gib_per_device": {k: round(v, 3) for k, v in mem.items.items()},
        "memory_bytes_per_device": {k: round(v * memory.GIB) for k, v in mem.items.items()},
        "memory_total_gib": round(mem.total, 3),
        "host_offload_gib_per_node": round(mem.host_gib, 3),
        "device_memory_gib": mem.capacity_gib,
        "fits": mem.fits,
        "notes": list(mem.notes),
        "suggestions": suggest.suggestions(plain) if mem.fits is False else [],
        "world_size": memory.world_size(plain["hardware"]),
        "time_cost": time_cost.time_and_cost(plain, counts, run_dir),
    }


def _plain(recipe) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(recipe, resolve=True)


def _money(value: float, currency: str) -> str:
    return f"{value:,.2f} {currency}"


def render(plan: dict, recipe, command: str) -> str:
    p, hw, method = plan["parameters"], recipe["hardware"], recipe["method"]
    how = method["name"]
    if "r" in method:
        targets = method["target_modules"]
        how += f" r={method['r']} on {targets if isinstance(targets, str) else ','.join(targets)}"
    devices = hw["gpus_per_node"] if hw["accelerator"] == "cuda" else hw.get("cpu_processes", 1)
    lines = [
        "plan (per device)",
        f"  parameters    {params.human(p['total'])} total ({params.human(p['non_embedding'])} non-embedding, "
        f"{params.human(p['embedding'])} embedding)",
        f"  trainable     {params.human(p['trainable'])} ({100 * p['trainable_fraction']:.2f}%) with {how}",
        f"  world         {plan['world_size']} process(es): {hw['nodes']} node(s) x {devices} "
        f"{'GPU' if hw['accelerator'] == 'cuda' else 'CPU process'}, strategy {hw['strategy']}",
    ]
    total = plan["memory_total_gib"]
    if plan["device_memory_gib"]:
        share = total / plan["device_memory_gib"]
        verdict = "fits under the 90% headroom" if plan["fits"] else "does NOT fit under 90% of device memory"
        lines.append(f"  memory        {total:.1f} GiB of {plan['device_memory_gib']:.0f} GiB ({100 * share:.0f}%): {verdict}")
    else:
        lines.append(f"  memory        {total:.2f} GiB of host RAM (CPU run)")
    items = " + ".join(f"{k} {v:.1f}" for k, v in plan["memory_gib_per_device"].items())
    lines.append(f"                = {items} (GiB)")
    if plan["host_offload_gib_per_node"]:
        lines.append(f"  host RAM      {plan['host_offload_gib_per_node']:.1f} GiB per node for offloaded states")
    lines += [f"  note          {note}" for note in plan["notes"]]
    for s in plan["suggestions"]:
        lines.append(f"  would fit     {s['change']}: {s['memory_gib']:.1f} GiB ({100 * s['fraction']:.0f}%)  [{s['overrides']}]")
    if plan["fits"] is False and not plan["suggestions"]:
        lines.append("  would fit     nothing tried fits: use a larger GPU preset or more nodes")
    tc = plan["time_cost"]
    lines.append(f"  tokens        {params.human(tc['tokens'])} to train ({tc['token_source']}); "
                 f"{tc['flops']:.2e} FLOPs")
    if tc["hours"] is not None:
        lines.append(f"  time          {tc['hours']:.2f} h at MFU {tc['mfu']:.2f}")
        lines.append(f"  cost          {_money(tc['cost'], tc['currency'])} "
                     f"({plan['world_size']} GPU x {tc['hours']:.2f} h x {hw['price_per_gpu_hour']} {tc['currency']}/GPU-h)")
    else:
        lines.append("  time          no GPU peak in this hardware preset: not estimated")
    api = tc.get("api_comparison")
    if api:
        line = (f"  API vs self   API {_money(api['api_monthly'], api['api_currency'])}/month against "
                f"self-hosted {_money(api['self_hosted_monthly'], api['self_hosted_currency'])}/month")
        if api["ratio"]:
            line += f" (API costs {api['ratio']:.1f}x)"
        elif not api["comparable"]:
            line += " (different currencies: not compared)"
        lines.append(line)
    lines.append(f"  launch        {command}")
    return "\n".join(lines)
