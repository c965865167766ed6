"""Capacity plan: what a GPU will do with each engine, preset and generation size.

Engines: ``wan-animate`` (Wan2.2-Animate-14B) and ``wan-animate-2`` (Wan-Animate-2-14B, base
and distilled: one architecture).

``faceswap-cam plan`` and ``doctor`` print it, the daemon takes its starting cadence from it,
and ``benchmarks/gpu_engine.py`` prints it beside what it measures (and writes the efficiency
it measured, which :mod:`.gpus` reads back).

The model of one batch (``L`` frames of which ``L - P`` are new):

* DiT: ``steps x forwards-per-step (2 with CFG) x FLOPs of one forward``. The forward is counted
  with ``torch.utils.flop_counter.FlopCounterMode`` on the real-size transformer built on the
  meta device from the model's config (no weights, no memory: about a second a shape on a
  CPU; ``faceswap-cam plan``'s whole table takes about 35 s on a 2-core machine), or,
  where torch must not be imported (the daemon), analytically (:func:`analytic_flops`,
  :func:`analytic_animate_2`), which agrees with the counter within a few per cent
  (tests/models/test_plan.py, tests/models/test_plan_wan2.py).
* Wan-Animate-2 adds, once per segment, a reference-extraction forward over the driving
  segment's tokens, whose per-layer K/V every denoising forward then attends to (each
  generated latent frame to its own driving frame's tokens, through a flex block mask); and
  its unconditional CFG branch skips one block. Nothing is cached from one segment to the
  next: the previous segment reaches the next only as pixel conditioning (a VAE encode).
* VAE: two encodes of ``L`` frames (pose video, conditioning video) and one decode, counted the
  same way.
* Preprocessing (``wan-animate``, :mod:`.preprocessing`): the person detector, the pose model
  and, for a SAM2 person mask, SAM2 run on the GPU on each new frame before the generation:
  their FLOPs a frame (constants counted at real size) at the TF32 (detector, pose) or BF16
  (SAM2) peak x their efficiency.
* CPU (:mod:`.host`): the engine's work on the host in the same call (scaling, drawing,
  masks, compositing; wan-animate-2's conversions and letterboxing), milliseconds a new frame.
* time = CPU + preprocessing + DiT FLOPs / (peak x efficiency) + VAE FLOPs / (bf16 peak x VAE
  efficiency). With ``--quantize fp8`` the DiT's linear layers run at the fp8 peak (torchao's
  dynamic float8 matmuls); attention stays in bf16. int8 is weight-only: it saves memory, not
  time.
* efficiency: the share of the peak our own GPU benchmarks measured (``EFFICIENCY_FILE``:
  ``benchmarks/gpu_engine.py`` for the DiT and VAE, ``benchmarks/preprocess.py --gpu`` for the
  preprocessing, whose stage times include their CPU share), else assumed, labelled so.
* swapped fps and cadence: the engine makes ``L - P`` frames per batch; the daemon feeds it
  every k-th camera frame with k = ceil(camera fps x seconds per frame x margin), so the screen
  shows camera fps / k swapped frames per second. That is the daemon's own choice, where it
  starts and where it steps down to; it keeps k while the engine keeps up within a smaller
  margin (daemon/pipeline/cadence.py), so a GPU up to about 5 % slower than predicted (more
  where a batch fits k with room) still shows these fps. ``spare``: the share of the time
  between batches at k a batch leaves.
* capture-to-screen latency of a batch's oldest frame (smooth playout shows every frame that
  late) = the wait for the batch's last frame ((L - P - 1) x k / camera fps) + the batch's
  generation time + one camera frame (to the next publish tick).
* memory: weights (bf16; fp8/int8 store the linear layers' weights in one byte) of the DiT, VAE
  and CLIP image encoder, plus an activation estimate (:func:`activation_bytes`;
  Wan-Animate-2's adds its per-segment reference K/V cache:
  :func:`animate_2_activation_bytes`).

Constants and the analytic count need no torch; everything that builds a model imports torch
and diffusers lazily.

The modules, each imported from where it defines a name (this package re-exports nothing):
``work`` (shapes, FLOPs, parameter counts), ``gpus`` (the GPU table, the local GPU, the
efficiency), ``animate`` and ``animate2`` (each engine's model: analytic and counted),
``counter`` (FlopCounterMode), ``meta_models`` (the real-size models on the meta device),
``memory``, ``engines`` (what the plan knows of each engine, its presets), ``preprocessing``
(the preprocessing models' FLOPs and efficiency), ``host`` (the CPU's share), ``timing``,
``rows`` (:func:`~.rows.build_plan`), ``predict`` (without torch: ``doctor`` and the daemon's
starting cadence), ``report`` (text, JSON) and ``cli`` (``faceswap-cam plan``).
"""
