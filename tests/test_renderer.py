"""L2F as one unit (talkface.renderer): PyTorch's path computes the photo's share once and splits a batch between
two one-core streams; its frames are the generator's own, and the threads it starts leave others' alone."""

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from talkface.face import align_photo
from talkface.renderer import STREAMS, L2FRenderer, to_pixels

REPO = Path(__file__).parent.parent
PHOTO = REPO / "assets" / "examples" / "face.jpg"


def test_the_torch_path_gives_the_generators_frames_on_streams(tiny_checkpoints):
    aligned = align_photo(PHOTO)
    renderer = L2FRenderer.from_checkpoint(tiny_checkpoints / "l2f")
    photo = torch.from_numpy(aligned.image).permute(2, 0, 1).float() / 127.5 - 1
    points = torch.from_numpy(aligned.landmarks).float()
    moved = points.repeat(5, 1, 1)  # an odd batch: the streams get 3 and 2 frames
    moved[:, 48:68, 1] += torch.linspace(0, 6, 5)[:, None]
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        prepared = renderer.prepare(photo, points)
        heatmaps = renderer.heatmaps(moved)
        with torch.inference_mode():
            args, kwargs = renderer.generator_inputs(prepared, heatmaps, moved)
            expected = renderer.generator(*args, **kwargs)  # every frame given the whole photo, one thread pool
            got = renderer.generate(prepared, heatmaps, moved)
        assert renderer._pool is not None and STREAMS == 2  # the batch went to the streams
        assert got.shape == expected.shape == (5, 3, renderer.image_size, renderer.image_size)
        assert (expected[0] - expected[4]).abs().max() > 1e-3  # the frames differ...
        assert torch.allclose(got, expected, atol=1e-5)  # ...and are the generator's own
        with torch.no_grad():  # not in inference mode, in this thread, the same frames
            assert torch.allclose(renderer.generate(prepared, heatmaps, moved), expected, atol=1e-5)
        # the streams run on one core each; the thread count of this thread and of threads started later is kept
        later: list[int] = []
        thread = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
        thread.start()
        thread.join()
        assert torch.get_num_threads() == 2 and later == [2]
        assert renderer._pool.submit(torch.get_num_threads).result() == 1
        # started and collected later (two batches queued on the streams at once), as pixels made on the streams
        with torch.inference_mode():
            first, second = [renderer.submit(prepared, heatmaps, moved, pixels=True) for _ in range(2)]
        assert (second() == to_pixels(got)).all() and (first() == to_pixels(got)).all()
        # the next batch's heatmaps, drawn on a thread of one core beside the streams: the same maps
        assert torch.equal(renderer.heatmaps_ahead(moved).result(), heatmaps)
        assert renderer._drawer.submit(torch.get_num_threads).result() == 1
    finally:
        torch.set_num_threads(threads)


def test_two_requests_at_once_share_one_pool_and_gradients_keep_nothing(tiny_checkpoints):
    """The app's requests run on threads of their own: two first batches at once start one pool and get the
    frames one alone gets. With gradients on (training), the photo's features are not kept between calls."""
    aligned = align_photo(PHOTO)
    renderer = L2FRenderer.from_checkpoint(tiny_checkpoints / "l2f")
    photo = torch.from_numpy(aligned.image).permute(2, 0, 1).float() / 127.5 - 1
    points = torch.from_numpy(aligned.landmarks).float().repeat(4, 1, 1)
    heatmaps = renderer.heatmaps(points)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        results, pools = {}, set()

        def request(i: int) -> None:
            with torch.inference_mode():
                results[i] = renderer.generate(renderer.prepare(photo, points[0]), heatmaps, points)
            pools.add(id(renderer._pool))

        workers = [threading.Thread(target=request, args=(i,)) for i in range(2)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert len(pools) == 1 and torch.equal(results[0], results[1])
        prepared = renderer.prepare(photo, points[0])
        frames = renderer.generate(prepared, heatmaps, points)  # gradients on
        assert frames.requires_grad and not prepared.features
        assert torch.allclose(frames.detach(), results[0], atol=1e-5)
    finally:
        torch.set_num_threads(threads)


FAULTS = """
import resource, sys
import numpy as np
import talkface  # noqa: F401  (its malloc settings)
np.core.multiarray._set_madvise_hugepage(False)  # 4-kB pages, as glibc's own blocks get them by default
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):  # warm: the heap grown once
    layers = [np.ones(2 << 20, np.float32) for _ in range(4)]  # four 8-MB activations, then freed
    del layers
start = faults()
for _ in range(10):
    layers = [np.ones(2 << 20, np.float32) for _ in range(4)]
    del layers
print(faults() - start)
"""


def _page_faults(env: dict[str, str]) -> int:
    out = subprocess.run([sys.executable, "-c", FAULTS], env={**os.environ, **env}, capture_output=True, text=True,
                         check=True, timeout=60).stdout
    return int(out.split()[-1])


def test_freed_activations_are_reused_not_mapped_again():
    """talkface's malloc settings (glibc): layer-sized blocks freed and allocated again come from the heap, with no
    page faulted in afresh (each 8-MB block is 2,048 pages of 4 kB); a user's own thresholds are kept."""
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc's malloc only")
    theirs = _page_faults({"MALLOC_TRIM_THRESHOLD_": str(1 << 20), "MALLOC_MMAP_THRESHOLD_": str(1 << 20)})
    if theirs < 5000:  # e.g. transparent huge pages "always": a few faults a block whatever malloc does
        pytest.skip(f"this kernel maps such blocks with few page faults ({theirs}): nothing to tell apart")
    assert _page_faults({}) < 500
