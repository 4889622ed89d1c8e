"""L2F as one unit (talkface.renderer): PyTorch's path computes the photo's share once and splits a batch between
two one-core streams; its frames are the generator's own, and the threads it starts leave others' alone."""

import threading
from pathlib import Path

import torch

from talkface.face import align_photo
from talkface.renderer import STREAMS, L2FRenderer

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
