"""A roofline on paper: predicted time per step of the scan, cuDNN and the Pallas kernel.

Nothing here is measured. For each shape of the benchmark grid this prints, per time step
of one layer and direction, forward plus backward (training): the FLOPs of the in-loop
products, the bytes each kernel moves to and from memory outside the chip (HBM, or L2 on
the GPU where the weights fit there), the kernel launches, and the time the model below
predicts on an H100 (SXM) and a TPU v5e; then the on-chip bytes of the Pallas kernel's
blocks (``lstm_jax.functional.pallas_block_plan``) against each chip's VMEM or shared
memory.

The model, per step: ``time = max(flops / peak, bytes / bandwidth) + fixed``, where
``fixed`` is the per-step cost of launches and loop control. Its constants
(:data:`H100`, :data:`V5E`) are the vendors' peak figures and assumed overheads, not
measurements on this project's code; ``gpu_check.sh`` measures what it predicts.

Usage: ``python -m experiments.benchmarks.roofline`` (markdown on stdout; the tables in
``RESULTS.md`` are this output).
"""

from __future__ import annotations

import dataclasses

from experiments.analytic import gates
from experiments.benchmarks.peers import Shape
from experiments.benchmarks.run import GRID
from lstm_jax import functional as F

KIB, MIB = 2**10, 2**20


@dataclasses.dataclass(frozen=True)
class Chip:
    """Peak rates and assumed per-step overheads of one accelerator."""

    name: str
    flops: float  # float32 matrix FLOP/s the in-loop products can reach
    hbm: float  # bytes/s
    l2: float  # bytes/s of a cache the weights may live in (0: none)
    l2_bytes: int
    sm_bandwidth: float  # bytes/s one program (one SM) can read from L2
    sms: int
    launch: float  # seconds per kernel launch inside a time loop
    loop: float  # seconds of loop control per iteration (XLA while loop)
    step: float  # seconds of a dependent step inside one Pallas kernel
    on_chip: int  # bytes of VMEM (TPU) or shared memory per SM (GPU)


#: H100 SXM: TF32 tensor cores 495 TFLOP/s dense, HBM3 3.35 TB/s, L2 50 MB at ~5.5 TB/s
#: (about 100 GB/s for one SM), 132 SMs, 228 KiB shared memory per SM. Assumed: 3 us per
#: launch in a loop, 5 us of while-loop control (a predicate copied to the host per
#: iteration), 1 us per dependent step inside a kernel.
H100 = Chip("H100", 495e12, 3.35e12, 5.5e12, 50 * 10**6, 100e9, 132, 3e-6, 5e-6, 1e-6, 228 * KIB)
#: TPU v5e: 197 TFLOP/s bf16, taken as 1/3 for float32 products (three bf16 passes),
#: HBM 819 GB/s, no cache for the weights, 128 MiB VMEM. Assumed: 1 us per fused op in a
#: loop, 1 us of loop control, 0.3 us per dependent step inside a kernel (MXU latency).
V5E = Chip("v5e", 197e12 / 3, 819e9, 0.0, 0, 0.0, 1, 1e-6, 1e-6, 0.3e-6, 128 * MIB)


# The benchmark grid's LSTM shapes, its first GRU shape and Zaremba et al.'s sizes
# (experiments/benchmarks/run.py).
SHAPES = [*GRID["lstm"], GRID["gru"][0], *GRID["zaremba"]]


@dataclasses.dataclass(frozen=True)
class Step:
    """One kernel's cost per time step of one layer and direction, forward + backward."""

    flops: float
    weight_bytes: float  # weight traffic (from L2 on the GPU where it fits)
    activation_bytes: float  # everything else, to and from HBM
    launches: int
    loops: int  # XLA while-loop iterations (forward + backward)
    kernel_steps: int  # dependent steps inside one long-running kernel


def costs(shape: Shape) -> dict[str, Step]:
    """Per-step costs of the scan, cuDNN and the Pallas kernel (float32, training)."""
    b, h, g = shape.batch, shape.hidden_size, gates(shape.cell)
    gh, f = g * h, 4
    weight = gh * h * f
    product = 2 * b * gh * h  # h @ W_hh, and in the backward dz @ W_hh
    # Per step every kernel reads the projected input and writes the output; training
    # keeps the gate activations and the states for the backward pass, which reads them
    # and the output's gradient and writes the gate gradients.
    forward_rows = b * f * (gh + h + gh + 2 * h)  # gx in, y out, activations + states saved
    backward_rows = b * f * (gh + 2 * h + h + gh)  # activations, states, dy in; dgates out
    return {
        # Autodiff of lax.scan: each step's gates_h round-trips through memory between
        # the product and the gate fusion, and dW_hh is a product per step accumulated
        # into a [G*H, H] carry (read and written every step).
        "scan": Step(
            flops=3 * product,
            weight_bytes=2 * weight + 2 * weight,
            activation_bytes=forward_rows + backward_rows + 2 * b * gh * f * 2,
            launches=4 + 6,
            loops=2,
            kernel_steps=0,
        ),
        # cuDNN (jax.experimental.rnn, the standard algorithm): a product and a gate
        # kernel per step each way, dW_hh as one product after the loop.
        "cudnn": Step(
            flops=3 * product,
            weight_bytes=2 * weight,
            activation_bytes=forward_rows + backward_rows + 2 * b * gh * f * 2,
            launches=2 + 2,
            loops=0,
            kernel_steps=0,
        ),
        # Pallas: one kernel per direction of the pass, W_hh on chip (TPU) or read by
        # each program from L2 per step unless it is small (GPU); dW_hh after the loop.
        "pallas": Step(
            flops=3 * product,
            weight_bytes=2 * weight,
            activation_bytes=forward_rows + backward_rows,
            launches=0,
            loops=0,
            kernel_steps=2,
        ),
    }


def predict(shape: Shape, kernel: str, step: Step, chip: Chip) -> float:
    """Seconds per step of one layer and direction, forward + backward (the model above)."""
    variant = "gpu" if chip is H100 else "tpu"
    plan = F.pallas_block_plan(
        _cell_name(shape), shape.hidden_size, shape.batch, "float32", variant
    )
    weight_time = 0.0
    if kernel == "pallas":
        programs = plan.grid[0]
        if chip is H100:
            # One program (one SM) per batch block runs its rows' whole step: only
            # min(programs, SMs) SMs compute, and each reads all of W_hh from L2 per
            # step unless W_hh fits in its registers.
            compute = step.flops / (chip.flops * min(programs, chip.sms) / chip.sms)
            if not plan.weights_resident:
                weight_time = step.weight_bytes / min(chip.sm_bandwidth, chip.l2 / programs)
        else:
            compute = step.flops / chip.flops  # W_hh resident in VMEM: no weight traffic
        memory = step.activation_bytes / chip.hbm + weight_time
        return max(compute, memory) + step.kernel_steps * chip.step
    compute = step.flops / chip.flops
    fits = chip.l2 and step.weight_bytes / 4 < chip.l2_bytes / 2
    weight_time = step.weight_bytes / (chip.l2 if fits else chip.hbm)
    memory = weight_time + step.activation_bytes / chip.hbm
    return max(compute, memory) + step.launches * chip.launch + step.loops * chip.loop


def _cell_name(shape: Shape) -> str:
    return "rnn_tanh" if shape.cell == "rnn" else shape.cell


def roofline_table() -> str:
    """The predicted per-step table, markdown."""
    lines = [
        "| shape | kernel | MFLOP/step | weight KiB/step | other KiB/step | launches/step "
        "| H100 us/step | v5e us/step |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for shape in SHAPES:
        for kernel, step in costs(shape).items():
            h100 = predict(shape, kernel, step, H100) * 1e6
            v5e = "n/a" if kernel == "cudnn" else f"{predict(shape, kernel, step, V5E) * 1e6:.1f}"
            launches = "1 per pass" if kernel == "pallas" else str(step.launches)
            lines.append(
                f"| {shape.name} | {kernel} | {step.flops / 1e6:.1f} "
                f"| {step.weight_bytes / KIB:,.0f} | {step.activation_bytes / KIB:,.0f} "
                f"| {launches} | {h100:.1f} | {v5e} |"
            )
    return "\n".join(lines)


def speedup_table() -> str:
    """Predicted forward+backward time of the whole sequence, Pallas against the others."""
    lines = [
        "| shape | H100: scan / pallas | H100: cuDNN / pallas | v5e: scan / pallas |",
        "| --- | --- | --- | --- |",
    ]
    for shape in SHAPES:
        t = {
            (kernel, chip.name): predict(shape, kernel, step, chip)
            for kernel, step in costs(shape).items()
            for chip in (H100, V5E)
        }
        lines.append(
            f"| {shape.name} | {t['scan', 'H100'] / t['pallas', 'H100']:.2f} "
            f"| {t['cudnn', 'H100'] / t['pallas', 'H100']:.2f} "
            f"| {t['scan', 'v5e'] / t['pallas', 'v5e']:.2f} |"
        )
    return "\n".join(lines)


def budget_table() -> str:
    """On-chip bytes of the Pallas kernel's blocks against the chips' on-chip memories."""
    lines = [
        "| shape | dtype | variant | Hp | batch block | time block | W_hh resident "
        "| forward KiB | backward KiB | fits |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    limits = {
        "tpu": [("v4", 16 * MIB), ("v5e", 128 * MIB), ("v6e", 128 * MIB)],
        "gpu": [("H100", 228 * KIB)],
    }
    for shape in SHAPES:
        for dtype in ("float32", "bfloat16"):
            for variant in ("tpu", "gpu"):
                plan = F.pallas_block_plan(
                    _cell_name(shape),
                    shape.hidden_size,
                    shape.batch,
                    dtype,
                    variant,
                    time=shape.time,
                )
                need = max(plan.forward_bytes, plan.backward_bytes)
                fits = ", ".join(
                    f"{name} {'yes' if need <= size else 'no'}" for name, size in limits[variant]
                )
                lines.append(
                    f"| {shape.name} | {dtype} | {variant} | {plan.hidden_padded} "
                    f"| {plan.batch_block} | {plan.time_block} "
                    f"| {'yes' if plan.weights_resident else 'no (L2)'} "
                    f"| {plan.forward_bytes / KIB:,.0f} | {plan.backward_bytes / KIB:,.0f} "
                    f"| {fits} |"
                )
    return "\n".join(lines)


def main() -> None:
    print("### Predicted cost per step (one layer and direction, forward + backward)\n")
    print(roofline_table())
    print("\n### Predicted speed-up of the Pallas kernel\n")
    print(speedup_table())
    print("\n### On-chip budget of the Pallas kernel\n")
    print(budget_table())


if __name__ == "__main__":
    main()
