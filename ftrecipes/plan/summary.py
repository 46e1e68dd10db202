"""The short plan printed by a dry run and written into the run dir: parameters, memory, command."""

from __future__ import annotations

from ftrecipes.plan import memory, params


def build_plan(recipe) -> dict:
    counts = params.count(recipe["model"]["architecture"], recipe["method"])
    mem = memory.estimate(recipe, counts)
    return {
        "parameters": {"total": counts.total, "embedding": counts.embedding,
                       "non_embedding": counts.non_embedding, "trainable": counts.trainable,
                       "trainable_fraction": counts.trainable_fraction},
        "memory_gib_per_device": {k: round(v, 3) for k, v in mem.items.items()},
        "memory_total_gib": round(mem.total, 3),
        "device_memory_gib": mem.capacity_gib,
        "fits": mem.fits,
        "world_size": memory.world_size(recipe["hardware"]),
    }


def render(plan: dict, recipe, command: str) -> str:
    p, hw, method = plan["parameters"], recipe["hardware"], recipe["method"]
    how = method["name"]
    if "r" in method:
        how += f" r={method['r']} on {method['target_modules'] if isinstance(method['target_modules'], str) else ','.join(method['target_modules'])}"
    lines = [
        "plan (first estimate, per device)",
        f"  parameters    {params.human(p['total'])} total ({params.human(p['non_embedding'])} non-embedding, "
        f"{params.human(p['embedding'])} embedding)",
        f"  trainable     {params.human(p['trainable'])} ({100 * p['trainable_fraction']:.2f}%) with {how}",
        f"  world         {plan['world_size']} process(es): {hw['nodes']} node(s) x "
        f"{hw['gpus_per_node'] if hw['accelerator'] == 'cuda' else hw.get('cpu_processes', 1)} "
        f"{'GPU' if hw['accelerator'] == 'cuda' else 'CPU process'}, strategy {hw['strategy']}",
    ]
    items = " + ".join(f"{k} {v:.1f}" for k, v in plan["memory_gib_per_device"].items())
    total = plan["memory_total_gib"]
    if plan["device_memory_gib"]:
        share = total / plan["device_memory_gib"]
        verdict = "fits, under the 90% headroom" if plan["fits"] else "does NOT fit under 90% of device memory"
        lines.append(f"  memory        {total:.1f} GiB of {plan['device_memory_gib']:.0f} GiB ({100 * share:.0f}%): {verdict}")
    else:
        lines.append(f"  memory        {total:.2f} GiB of host RAM (CPU run)")
    lines.append(f"                = {items} (GiB)")
    lines.append(f"  launch        {command}")
    return "\n".join(lines)
