"""Tests of lwpd.torch: partitions, forward-mode derivatives, the coded optimizer, the DDP hook."""

import copy
import io
import math
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lwpd import identity_codebook, random_codebook  # noqa: E402
from lwpd.stragglers import Bernoulli, ShiftedExponential  # noqa: E402
from lwpd.torch import (  # noqa: E402
    CodedOptimizer,
    LWPDHookState,
    ParameterPartition,
    assign_grads,
    directional_derivatives,
    flatten_grads,
    lwpd_comm_hook,
    partition_parameters,
)

from reference import FixedDelays, decode_projection  # noqa: E402

F = torch.nn.functional


def mlp(dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3)).to(dtype)


def cnn(dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(2, 3, 3), torch.nn.Tanh(), torch.nn.Conv2d(3, 2, 2, bias=False), torch.nn.Flatten(),
        torch.nn.Linear(2 * 3 * 3, 3),
    ).to(dtype)


def data(model, dtype, seed=1):
    gen = torch.Generator().manual_seed(seed)
    shape = (6, 5) if isinstance(model[0], torch.nn.Linear) else (6, 2, 6, 6)
    return torch.randn(shape, generator=gen, dtype=dtype), torch.randint(0, 3, (6,), generator=gen)


def backprop_grad(model, x, y):
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    return flatten_grads(model).detach().clone()


def flat_index_tensors(model):
    """Flat coordinates of every parameter entry, shaped like the parameter (the oracle)."""
    out, start = {}, 0
    for name, p in model.named_parameters():
        out[name] = torch.arange(start, start + p.numel()).view(p.shape)
        start += p.numel()
    return out


# ------------------------------------------------------------------ packaging
def test_import_lwpd_does_not_import_torch():
    code = "import sys, lwpd; assert 'torch' not in sys.modules, 'lwpd imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_missing_torch_raises_an_import_error_that_says_what_to_install():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "try:\n    import lwpd.torch\nexcept ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, timeout=120, capture_output=True, text=True)
    assert 'pip install "lwpd[torch]"' in out.stdout


# ------------------------------------------------------------------ partitions
def blocks_of(pp):
    perm = pp.permutation if pp.permutation is not None else np.arange(pp.dim)
    return [set(perm[a:b].tolist()) for a, b in zip(pp.partition.offsets[:-1], pp.partition.offsets[1:])]


def test_tensor_partition_is_one_contiguous_block_per_parameter():
    model = cnn()
    pp = partition_parameters(model, "tensor")
    assert isinstance(pp, ParameterPartition) and pp.permutation is None
    assert pp.partition.sizes.tolist() == [p.numel() for p in model.parameters()]
    assert pp.block_names == tuple((n,) for n, _ in model.named_parameters())


def test_layer_partition_groups_each_modules_weight_and_bias():
    model = cnn()
    idx = flat_index_tensors(model)
    pp = partition_parameters(model, "layer")
    expected = [
        set(idx["0.weight"].flatten().tolist()) | set(idx["0.bias"].tolist()),
        set(idx["2.weight"].flatten().tolist()),
        set(idx["4.weight"].flatten().tolist()) | set(idx["4.bias"].tolist()),
    ]
    assert blocks_of(pp) == expected
    assert pp.block_names == (("0.weight", "0.bias"), ("2.weight",), ("4.weight", "4.bias"))


@pytest.mark.parametrize("make", [mlp, cnn])
def test_neuron_partition_is_a_row_of_the_weight_plus_its_bias_entry(make):
    model = make()
    idx = flat_index_tensors(model)
    expected = []
    for name, module in model.named_modules():
        if hasattr(module, "weight") and isinstance(module.weight, torch.nn.Parameter):
            w = idx[f"{name}.weight"]
            for i in range(w.shape[0]):
                block = set(w[i].flatten().tolist())
                if module.bias is not None:
                    block.add(int(idx[f"{name}.bias"][i]))
                expected.append(block)
    pp = partition_parameters(model, "neuron")
    assert blocks_of(pp) == expected
    assert sorted(pp.permutation.tolist()) == list(range(pp.dim))


def test_max_block_halves_large_blocks_recursively():
    model = mlp()
    pp = partition_parameters(model, "neuron", max_block=2)  # first layer: neurons of 6 -> 3 + 3 -> 2+1 + 2+1
    assert pp.partition.sizes.tolist()[:4] == [2, 1, 2, 1]
    assert max(pp.partition.sizes) <= 2
    whole = blocks_of(partition_parameters(model, "neuron"))
    pieces = blocks_of(pp)
    # every piece lies inside one neuron, and the pieces of a neuron cover it
    assert all(any(piece <= block for block in whole) for piece in pieces)
    assert sum(len(p) for p in pieces) == pp.dim
    assert partition_parameters(model, "tensor", max_block=7).partition.sizes.tolist()[:4] == [5, 5, 5, 5]


def test_to_blocks_and_from_blocks_are_inverse_and_follow_the_permutation():
    model = cnn()
    pp = partition_parameters(model, "neuron", max_block=5)
    flat = torch.randn(3, pp.dim, dtype=torch.float64)
    blocked = pp.to_blocks(flat)
    assert torch.equal(blocked, flat[:, torch.as_tensor(pp.permutation)])
    assert torch.equal(pp.from_blocks(blocked), flat)


def test_bad_partition_input_raises_clear_errors():
    with pytest.raises(ValueError, match="scheme must be one of 'tensor', 'layer', 'neuron'"):
        partition_parameters(mlp(), "channel")
    with pytest.raises(ValueError, match="model has no parameters"):
        partition_parameters(torch.nn.ReLU())
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        partition_parameters([torch.zeros(2)])
    with pytest.raises(ValueError, match="max_block must be >= 1"):
        partition_parameters(mlp(), max_block=0)


# ------------------------------------------------------------------ flat gradients
def test_flatten_and_assign_grads_round_trip():
    model = mlp()
    vec = torch.randn(sum(p.numel() for p in model.parameters()), dtype=torch.float64)
    assign_grads(model, vec)
    assert torch.equal(flatten_grads(model), vec)
    assert torch.equal(model[0].weight.grad, vec[:20].view(4, 5))
    kept = model[0].weight.grad
    expected = 2 * vec[:20].view(4, 5)  # (the first call made the grads views of vec)
    assign_grads(model, 2 * vec)  # in place: the same tensor objects
    assert model[0].weight.grad is kept and torch.equal(kept, expected)
    with pytest.raises(ValueError, match="vector must be 1-D of length 39"):
        assign_grads(model, vec[:-1])


def test_flatten_grads_gives_zeros_for_parameters_without_gradient():
    model = mlp()
    assert torch.equal(flatten_grads(model), torch.zeros(39, dtype=torch.float64))


# ------------------------------------------------------------------ jvp == backprop
@pytest.mark.parametrize("make", [mlp, cnn])
@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_jvp_directional_derivatives_equal_backprop_dot_products(make, dtype, rtol):
    model = make(dtype)
    x, y = data(model, dtype)
    g = backprop_grad(model, x, y).double()
    n = g.numel()
    gen = torch.Generator().manual_seed(2)
    dense = torch.randn(7, n, generator=gen, dtype=torch.float64)
    got = directional_derivatives(model, F.cross_entropy, x, y, dense.to(dtype), chunk_size=3)
    expected = dense @ g
    scale = torch.linalg.vector_norm(dense, dim=1) * torch.linalg.vector_norm(g)
    assert got.dtype == dtype and got.shape == (7,)
    assert torch.all((got.double() - expected).abs() <= rtol * scale)
    cb = random_codebook(12, n, weight=3, seed=3)
    got_cb = directional_derivatives(model, F.cross_entropy, x, y, cb)
    expected_cb = torch.as_tensor(cb.to_dense()) @ g
    scale_cb = torch.as_tensor(np.linalg.norm(cb.to_dense(), axis=1)) * torch.linalg.vector_norm(g)
    assert torch.all((got_cb.double() - expected_cb).abs() <= rtol * scale_cb)


def test_jvp_matches_central_finite_differences():
    model = cnn()
    x, y = data(model, torch.float64)
    params = list(model.parameters())
    v = torch.randn(sum(p.numel() for p in params), generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    got = float(directional_derivatives(model, F.cross_entropy, x, y, v))
    theta = torch.nn.utils.parameters_to_vector(params).detach()
    losses = []
    for sign in (1, -1):
        torch.nn.utils.vector_to_parameters(theta + sign * 1e-6 * v, params)
        with torch.no_grad():
            losses.append(float(F.cross_entropy(model(x), y)))
    assert got == pytest.approx((losses[0] - losses[1]) / 2e-6, rel=1e-6)


def test_chunking_and_block_order_layout_do_not_change_the_result():
    from lwpd.torch._patterns import _default_codebook

    model = mlp()
    x, y = data(model, torch.float64)
    g = backprop_grad(model, x, y)
    pp = partition_parameters(model, "neuron", max_block=4)
    cb = _default_codebook(pp.partition)  # codewords in block order
    a = directional_derivatives(model, F.cross_entropy, x, y, cb, partition=pp)
    b = directional_derivatives(model, F.cross_entropy, x, y, cb, chunk_size=1, partition=pp)
    expected = torch.as_tensor(cb.encode(pp.to_blocks(g).numpy()))
    torch.testing.assert_close(a, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-14)


def test_bad_directions_raise_clear_errors():
    model = mlp()
    x, y = data(model, torch.float64)
    with pytest.raises(ValueError, match=r"directions must have shape \(39,\) or \(N, 39\)"):
        directional_derivatives(model, F.cross_entropy, x, y, torch.zeros(2, 42))
    with pytest.raises(ValueError, match="must have dimension 39"):
        directional_derivatives(model, F.cross_entropy, x, y, identity_codebook(42))
    with pytest.raises(TypeError, match="directions must be a lwpd.Codebook or a torch.Tensor"):
        directional_derivatives(model, F.cross_entropy, x, y, np.zeros(39))
    with pytest.raises(ValueError, match="model has no parameters"):
        directional_derivatives(torch.nn.Identity(), F.mse_loss, x, x, torch.zeros(1))
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        directional_derivatives(model, F.cross_entropy, x, y, torch.zeros(39), chunk_size=0)


# ------------------------------------------------------------------ coded optimizer
def one_step(model, opt, x, y):
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    opt.step()


def test_without_stragglers_the_coded_step_is_the_plain_step():
    model = mlp()
    twin = copy.deepcopy(model)
    x, y = data(model, torch.float64)
    coded = CodedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), model=model, seed=0)
    plain = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9)
    for _ in range(3):
        one_step(model, coded, x, y)
        one_step(twin, plain, x, y)
        assert coded.last_stats.received == coded.last_stats.n_codewords
        assert coded.last_stats.recovered_fraction == 1.0 and coded.last_stats.relative_error < 1e-12
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("policy", ["deadline", "first_k", "all"])
def test_under_stragglers_grad_is_the_projection_onto_the_received_codewords(policy):
    model = cnn()
    x, y = data(model, torch.float64)
    opt = CodedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), partition="neuron", max_block=6,
                         redundancy=0.75, policy=policy,
                         stragglers=Bernoulli(0.5) if policy == "all" else ShiftedExponential(1.0, 1.0), seed=1, n_workers=6,
                         chunks=2)
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    g = flatten_grads(model).clone()
    opt.step()
    g_hat = flatten_grads(model)
    received = opt.last_received
    V = opt.codebook.to_dense()
    blocked = opt.parameter_partition.to_blocks(g).numpy()
    oracle = decode_projection(V, received, V[received] @ blocked)
    np.testing.assert_allclose(opt.parameter_partition.to_blocks(g_hat).numpy(), oracle, rtol=1e-9, atol=1e-12)
    assert float(g_hat @ g) == pytest.approx(float(g_hat @ g_hat), rel=1e-9)  # a descent direction
    stats = opt.last_stats
    assert stats.received == received.size < stats.n_codewords
    assert stats.relative_error == pytest.approx(float(torch.linalg.vector_norm(g_hat - g) / torch.linalg.vector_norm(g)))


def test_all_workers_failing_gives_a_zero_gradient():
    model = mlp()
    before = [p.detach().clone() for p in model.parameters()]
    x, y = data(model, torch.float64)
    opt = CodedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), stragglers=Bernoulli(1.0), seed=0)
    one_step(model, opt, x, y)
    assert opt.last_stats.received == 0 and opt.last_stats.relative_error == 1.0
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))


@pytest.mark.parametrize("fast_path", ["patterns-in-place", "patterns-flat", "blocks"])
@pytest.mark.parametrize("resume_seed", [5, 123])
def test_state_dict_round_trip_resumes_identically(resume_seed, fast_path, monkeypatch):
    # resuming into an optimizer built with another seed deals the codewords as saved (and
    # everything derived from the dealing follows: the chunks' blocks, each codeword's chunk
    # and its block and row for the received sets)
    from lwpd import _config

    monkeypatch.setattr(_config, "TORCH_PATTERN_PROJECTION", fast_path != "blocks")
    monkeypatch.setattr(_config, "TORCH_IN_PLACE_MAX_FRACTION", 1.0 if fast_path == "patterns-in-place" else -1.0)
    monkeypatch.setattr(_config, "TORCH_SHORTCUT_MIN_BLOCKS", 0.0)  # the block shortcut on every step
    x, y = data(mlp(), torch.float64)

    def make(seed=5):
        model = mlp()
        opt = CodedOptimizer(torch.optim.Adam(model.parameters(), lr=0.01), stragglers=Bernoulli(0.3), seed=seed)
        return model, opt

    model, opt = make()
    for _ in range(3):
        one_step(model, opt, x, y)
    saved_model = copy.deepcopy(model.state_dict())
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    saved_opt = torch.load(buffer, weights_only=True)  # plain containers only
    for _ in range(3):
        one_step(model, opt, x, y)
    model2, opt2 = make(resume_seed)
    model2.load_state_dict(saved_model)
    opt2.load_state_dict(saved_opt)
    for _ in range(3):
        one_step(model2, opt2, x, y)
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q)
    assert opt.last_stats == opt2.last_stats


def test_param_groups_are_the_wrapped_optimizers_and_schedulers_work():
    model = mlp()
    inner = torch.optim.SGD(model.parameters(), lr=0.5)
    opt = CodedOptimizer(inner, seed=0)
    assert opt.param_groups is inner.param_groups and opt.state is inner.state
    assert isinstance(opt, torch.optim.Optimizer)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    x, y = data(model, torch.float64)
    one_step(model, opt, x, y)
    sched.step()
    assert inner.param_groups[0]["lr"] == 0.25


def test_partition_without_a_model_pairs_weights_with_their_biases():
    model = cnn()
    by_shape = CodedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), seed=0).parameter_partition
    by_module = CodedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model=model, seed=0).parameter_partition
    assert by_shape.partition == by_module.partition
    assert np.array_equal(by_shape.permutation, by_module.permutation)


def test_bad_optimizer_input_raises_clear_errors():
    model = mlp()
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError, match="optimizer must be a torch.optim.Optimizer"):
        CodedOptimizer(model)
    with pytest.raises(ValueError, match="partition must be one of 'tensor', 'layer', 'neuron'"):
        CodedOptimizer(sgd, partition="row")
    with pytest.raises(ValueError, match="policy must be one of"):
        CodedOptimizer(sgd, policy="never")
    with pytest.raises(ValueError, match="codebook must have dimension 39"):
        CodedOptimizer(sgd, codebook=identity_codebook(40))
    with pytest.raises(ValueError, match="must cover the optimizer's parameters"):
        CodedOptimizer(sgd, partition=partition_parameters(cnn()))
    with pytest.raises(ValueError, match="model must have exactly the optimizer's parameters"):
        CodedOptimizer(sgd, model=cnn())


# ------------------------------------------------------------------ digits
def digits(seed=0):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X / 16.0, y, test_size=0.25, random_state=seed, stratify=y)
    f = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    return f(Xtr), torch.as_tensor(ytr), f(Xte), torch.as_tensor(yte)


def digits_mlp(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))


def accuracy(model, X, y):
    with torch.no_grad():
        return float((model(X).argmax(1) == y).float().mean())


def train_epochs(model, opt, X, y, epochs, batch=64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(X), generator=gen)
        for i in range(0, len(X), batch):
            sel = order[i : i + batch]
            opt.zero_grad()
            F.cross_entropy(model(X[sel]), y[sel]).backward()
            opt.step()


def test_digits_mlp_with_20_percent_stragglers_reaches_90_percent():
    Xtr, ytr, Xte, yte = digits()
    model = digits_mlp()
    opt = CodedOptimizer(torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), model=model,
                         stragglers=Bernoulli(0.2), seed=0)
    train_epochs(model, opt, Xtr, ytr, epochs=15)
    assert accuracy(model, Xte, yte) >= 0.90
    assert opt.last_stats.received < opt.last_stats.n_codewords  # stragglers did cost codewords


# ------------------------------------------------------------------ DDP hook
def _ddp_worker(rank, world, init_method, results):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world)
    try:
        Xtr, ytr, Xte, yte = digits()
        shard = slice(rank, None, world)
        # 1. with every base codeword sent, the hook returns exactly the averaged gradient
        model = digits_mlp()
        exact = DDP(digits_mlp(), bucket_cap_mb=0.01)
        exact_state = LWPDHookState(block_size=4, codewords_per_block=4, error_feedback=False)
        exact.register_comm_hook(exact_state, lwpd_comm_hook)
        plain = DDP(model, bucket_cap_mb=0.01)
        grads = []
        for net in (exact, plain):
            net.zero_grad()
            F.cross_entropy(net(Xtr[shard][:64]), ytr[shard][:64]).backward()
            grads.append(torch.cat([p.grad.reshape(-1) for p in net.parameters()]))
        exact_err = float(torch.linalg.vector_norm(grads[0] - grads[1]) / torch.linalg.vector_norm(grads[1]))
        assert all(stats["recovered"] == 1.0 for stats in exact_state.last_stats.values())  # 100% of each bucket
        assert sum(st["sent"] for st in exact_state.last_stats.values()) == grads[0].numel()  # at 1x the floats
        # 2. training with and without the (compressing) hook
        accs = {}
        for hooked in (False, True):
            net = DDP(digits_mlp())
            state = LWPDHookState(block_size=8, codewords_per_block=4, error_feedback=True)
            if hooked:
                net.register_comm_hook(state, lwpd_comm_hook)
            opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
            train_epochs(net, opt, Xtr[shard], ytr[shard], epochs=15, batch=32)
            accs[hooked] = accuracy(net.module, Xte, yte)
        sent = sum(s["sent"] for s in state.last_stats.values()) / sum(s["numel"] for s in state.last_stats.values())
        results[rank] = (exact_err, accs[False], accs[True], sent)
    finally:
        dist.destroy_process_group()


def test_hook_state_and_hook_validate_their_input():
    with pytest.raises(ValueError, match="codewords_per_block must be >= 1"):
        LWPDHookState(codewords_per_block=0)
    with pytest.raises(TypeError, match="state must be a LWPDHookState"):
        lwpd_comm_hook(None, None)


def test_hook_codebooks_are_the_same_for_equal_seeds_and_change_every_step():
    a, b = LWPDHookState(block_size=4, codewords_per_block=2, seed=3), LWPDHookState(block_size=4, codewords_per_block=2, seed=3)
    first, again = a.codebook(0, 10), b.codebook(0, 10)
    assert first == again and len(first) == 6 and first.partition.sizes.tolist() == [4, 4, 2]
    assert a.codebook(0, 10) != first  # the next step draws other codewords


def test_cyclic_hook_codewords_cover_every_block_in_turn():
    """Cyclic codewords: a basis of each block sent c at a time, so ceil(b / c) steps span
    every block (random draws need not), and c = b spans each block at every step."""
    from lwpd import ProjectionDecoder

    state = LWPDHookState(block_size=8, codewords_per_block=3)
    period = [state.codebook(0, 21).to_dense() for _ in range(3)]
    assert all(V.shape[0] == 3 + 3 + 3 for V in period)  # blocks 8, 8, 5; c = 3 each
    assert np.linalg.matrix_rank(np.vstack(period)) == 21
    np.testing.assert_array_equal(state.codebook(0, 21).to_dense(), period[0])  # the period repeats
    whole = LWPDHookState(block_size=8, codewords_per_block=8).codebook(0, 64)
    assert np.linalg.matrix_rank(whole.to_dense()) == 64 and len(whole) == 64
    drawn = LWPDHookState(block_size=8, codewords_per_block=8, codewords="random", seed=0).codebook(0, 64)
    dec = ProjectionDecoder(drawn)
    dec.update(np.arange(len(drawn)), np.zeros(len(drawn)))
    assert dec.recovered_fraction() < 1.0  # random draws of the 64-codeword base leave directions out
    with pytest.raises(ValueError, match="codewords must be one of"):
        LWPDHookState(codewords="structured")


@pytest.mark.parametrize("config", [dict(block_size=8, codewords_per_block=3), dict(block_size=8, codewords_per_block=8),
                                    dict(block_size=8, codewords_per_block=5, codewords="random"),
                                    dict(block_size=4, codewords_per_block=2, max_weight=1)])
@pytest.mark.parametrize("numel", [64, 21, 5])
def test_hook_encodes_and_decodes_a_bucket_as_the_general_path_does(config, numel):
    """The hook's dense maps (a few reshaped products per bucket) against the codebook's own
    encode and the general ProjectionDecoder with every codeword received: to 1e-12 in
    float64 and 1e-6 in float32, over the steps of a cycle, with and without a short last
    block; the recovered fraction is the decoder's."""
    from lwpd import ProjectionDecoder

    state = LWPDHookState(seed=4, **config)
    rng = np.random.default_rng(numel)
    for _ in range(3):
        codebook, code = state._codebook_and_maps(0, numel)
        g = rng.standard_normal(numel)
        values = codebook.encode(g)
        decoder = ProjectionDecoder(codebook)
        decoder.update(np.arange(len(codebook)), values)
        for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-6)):
            ours = code.encode(torch.as_tensor(g, dtype=dtype))
            assert ours.dtype == dtype
            np.testing.assert_allclose(ours.double().numpy(), values, rtol=tol, atol=tol * np.abs(values).max())
            decoded = code.decode(torch.as_tensor(values, dtype=dtype)).double().numpy()
            np.testing.assert_allclose(decoded, decoder.estimate(), rtol=tol, atol=tol * np.abs(g).max())
        assert code.recovered == pytest.approx(decoder.recovered_fraction(), abs=1e-15)


@pytest.mark.slow
def test_ddp_hook_on_two_gloo_processes_trains_like_plain_ddp(tmp_path):
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        results = manager.dict()
        # a rendezvous file, not a TCP port: no port to race for with tests running in parallel
        mp.spawn(_ddp_worker, args=(2, f"file://{tmp_path / 'rendezvous'}", results), nprocs=2, join=True)
        results = dict(results)
    print(results)
    assert sorted(results) == [0, 1]
    for exact_err, plain_acc, hooked_acc, sent in results.values():
        assert exact_err < 1e-5
        assert plain_acc >= 0.90 and hooked_acc >= 0.90
        assert abs(plain_acc - hooked_acc) <= 0.05
        assert sent == pytest.approx(0.5, abs=0.01)  # half the values of plain all-reduce
    assert results[0][1:3] == results[1][1:3]  # replicas stay in sync


def test_a_persistently_slow_worker_does_not_erase_the_same_codewords_every_step():
    from lwpd.stragglers import SlowWorkers

    model = mlp()
    x, y = data(model, torch.float64)
    before = [p.detach().clone() for p in model.parameters()]
    # with 40% of the workers 100x slow every step, the deadline cuts them off every step;
    # the groups of codewords change hands every step, so every parameter still moves
    opt = CodedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model=model,
                         stragglers=SlowWorkers(0.4, 100.0), seed=0)
    fractions = []
    for _ in range(40):
        one_step(model, opt, x, y)
        fractions.append(opt.last_stats.recovered_fraction)
    assert min(fractions) < 1.0  # the slow workers cost the decode directions
    unchanged = sum(int((p.detach() == q).sum()) for p, q in zip(model.parameters(), before))
    assert unchanged == 0


def test_pickle_deepcopy_and_optimizer_hooks():
    import pickle

    model = mlp()
    x, y = data(model, torch.float64)
    opt = CodedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), stragglers=Bernoulli(0.2), seed=1)
    one_step(model, opt, x, y)
    for clone in (pickle.loads(pickle.dumps(opt)), copy.deepcopy(opt)):
        assert isinstance(clone.optimizer, torch.optim.SGD) and len(clone.codebook) == len(opt.codebook)
        assert clone.state_dict()["lwpd"]["rng"] == opt.state_dict()["lwpd"]["rng"]
    calls = []
    handle = opt.register_step_pre_hook(lambda o, args, kwargs: calls.append("step-pre"))
    opt.register_step_post_hook(lambda o, args, kwargs: calls.append("step-post"))
    opt.register_state_dict_pre_hook(lambda o: calls.append("state-pre"))
    opt.register_state_dict_post_hook(lambda o, state: calls.append("state-post"))
    opt.register_load_state_dict_pre_hook(lambda o, state: calls.append("load-pre"))
    opt.register_load_state_dict_post_hook(lambda o: calls.append("load-post"))
    one_step(model, opt, x, y)
    opt.load_state_dict(opt.state_dict())
    assert calls == ["step-pre", "step-post", "state-pre", "state-post", "load-pre", "load-post"]
    handle.remove()
    one_step(model, opt, x, y)
    assert calls[-1] == "step-post" and calls.count("step-pre") == 1


def test_optimizers_that_reevaluate_the_closure_are_refused():
    with pytest.raises(TypeError, match="must not need a closure"):
        CodedOptimizer(torch.optim.LBFGS(mlp().parameters()))


def test_bad_losses_and_gradients_raise_clear_errors():
    model = mlp()
    x, y = data(model, torch.float64)
    per_sample = lambda out, t: F.cross_entropy(out, t, reduction="none")  # noqa: E731
    with pytest.raises(ValueError, match="loss_fn must return a scalar"):
        directional_derivatives(model, per_sample, x, y, torch.eye(39, dtype=torch.float64)[:2])
    opt = CodedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model=model, seed=0)
    F.cross_entropy(model(x), y).backward()
    model[0].weight.grad[0, 0] = float("nan")
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"NaN or inf entries \(in 0.weight\)"):
        opt.step()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    bf16 = torch.nn.Linear(3, 2).to(torch.bfloat16)
    opt = CodedOptimizer(torch.optim.SGD(bf16.parameters(), lr=0.1), seed=0, n_workers=2)
    bf16(torch.randn(4, 3, dtype=torch.bfloat16)).sum().backward()
    with pytest.raises(TypeError, match="got torch.bfloat16"):
        opt.step()


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_huge_finite_and_half_precision_gradients_step_with_their_error_measured(dtype, monkeypatch):
    """A gradient whose norm overflows its dtype (float32 entries of 1e30) is finite, so it is
    coded, not refused, and the relative error is measured in float64; float16 gradients
    are coded in their own tensors. Both paths (in place and flat) agree with the general
    path."""
    from lwpd import _config

    scale = 1e30 if dtype == torch.float32 else 1.0
    results = {}
    for path, (shortcut, fraction) in {"in-place": (True, 1.0), "flat": (True, -1.0), "general": (False, 1.0)}.items():
        monkeypatch.setattr(_config, "TORCH_EXACT_SHORTCUT", shortcut)
        monkeypatch.setattr(_config, "TORCH_IN_PLACE_MAX_FRACTION", fraction)
        torch.manual_seed(0)
        model = torch.nn.Linear(24, 4).to(dtype)
        opt = CodedOptimizer(torch.optim.SGD(model.parameters(), lr=0.0), model=model, stragglers=Bernoulli(0.3),
                             n_workers=6, seed=2)
        for p in model.parameters():
            p.grad = (torch.randn(p.shape) * scale).to(dtype)
        opt.step()
        results[path] = (torch.cat([p.grad.reshape(-1) for p in model.parameters()]).double() / scale, opt.last_stats)
    general, stats = results["general"]
    assert 0.0 < stats.relative_error < 1.0 and math.isfinite(stats.relative_error)
    for path in ("in-place", "flat"):
        grads, fast = results[path]
        torch.testing.assert_close(grads, general, rtol=1e-3 if dtype == torch.float16 else 1e-6, atol=1e-3 if dtype == torch.float16 else 1e-6)
        assert fast.relative_error == pytest.approx(stats.relative_error, rel=1e-2 if dtype == torch.float16 else 1e-6)


def _record_projection_paths(monkeypatch) -> list[str]:
    """The pattern path's projections as the steps take them: ``"_project_in_place"`` (the
    parameters' own gradients) or ``"_project_by_patterns"`` (the flat kernel), one per step."""
    taken = []
    for name in ("_project_in_place", "_project_by_patterns"):
        real = getattr(CodedOptimizer, name)
        monkeypatch.setattr(CodedOptimizer, name, lambda self, *a, _real=real, _name=name: taken.append(_name) or _real(self, *a))
    return taken


@pytest.mark.parametrize("case", ["missing-grad", "non-contiguous", "mixed-dtypes", "grad-requires-grad", "many-tensors"])
def test_what_the_in_place_projection_cannot_take_goes_the_flat_way(case, monkeypatch):
    """A missing, non-contiguous or autograd-tracked gradient, mixed dtypes, or more tensors than
    ``TORCH_IN_PLACE_MAX_TENSORS``: the step takes the flat kernel, and writes what the general
    path writes."""
    from lwpd import _config

    monkeypatch.setattr(_config, "TORCH_IN_PLACE_MAX_FRACTION", 1.0)
    if case == "many-tensors":
        monkeypatch.setattr(_config, "TORCH_IN_PLACE_MAX_TENSORS", 3)
    taken = _record_projection_paths(monkeypatch)
    results = {}
    for general in (False, True):
        monkeypatch.setattr(_config, "TORCH_EXACT_SHORTCUT", not general)
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)).double()
        if case == "mixed-dtypes":
            model[2].float()
        opt = CodedOptimizer(torch.optim.SGD(model.parameters(), lr=0.0), model=model, stragglers=Bernoulli(0.4),
                             n_workers=5, seed=3)
        grads = []
        for step in range(4):
            gen = torch.Generator().manual_seed(step)
            for p in model.parameters():
                p.grad = torch.randn(p.shape, generator=gen).to(p.dtype)
            if case == "missing-grad":
                model[2].bias.grad = None
            elif case == "non-contiguous":
                model[0].weight.grad = torch.randn(model[0].weight.shape[::-1], generator=gen, dtype=torch.float64).t()
            elif case == "grad-requires-grad":
                model[0].bias.grad.requires_grad_(True)
            opt.step()
            grads.append(torch.cat([torch.zeros(p.numel()) if p.grad is None else p.grad.detach().double().reshape(-1)
                                    for p in model.parameters()]))
        results[general] = grads
    assert taken and set(taken) == {"_project_by_patterns"}
    for fast, general in zip(results[False], results[True]):
        torch.testing.assert_close(fast, general, rtol=0, atol=1e-6 if case == "mixed-dtypes" else 1e-12)


def test_arrivals_can_come_from_a_cluster():
    from concurrent.futures import ThreadPoolExecutor

    from lwpd.cluster import ExecutorCluster, SimulatedCluster

    x, y = data(mlp(), torch.float64)
    # no delays: every chunk arrives, the coded step is the plain step
    coded, plain = mlp(), mlp()
    opt = CodedOptimizer(torch.optim.SGD(coded.parameters(), lr=0.1), seed=0, n_workers=99, chunks=2,
                         cluster=SimulatedCluster(4, seed=0), policy="all")
    assert opt.n_workers == 4  # the cluster's
    ref = torch.optim.SGD(plain.parameters(), lr=0.1)
    for _ in range(3):
        one_step(coded, opt, x, y)
        one_step(plain, ref, x, y)
    for p, q in zip(coded.parameters(), plain.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-12)
    assert opt.last_stats.received == opt.last_stats.n_codewords
    # a worker that never answers: its group is missing, and the step waited the deadline
    model = mlp()
    opt = CodedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), seed=0, chunks=2, deadline=1e6,
                         cluster=SimulatedCluster(4, FixedDelays([1.0, 1.0, 1.0, np.inf]), seed=0))
    one_step(model, opt, x, y)
    group_sizes = {int(sum(opt._chunk_indices[k * 2 + c].numel() for c in range(2))) for k in range(4)}
    assert opt.last_stats.n_codewords - opt.last_stats.received in group_sizes
    assert opt.last_stats.time == 1e6
    # a real executor: the same interface
    with ThreadPoolExecutor(2) as pool:
        model = mlp()
        opt = CodedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), seed=0, policy="first_k", wait_for=0.5,
                             cluster=ExecutorCluster(pool, 3))
        one_step(model, opt, x, y)
        assert 0 < opt.last_stats.received < opt.last_stats.n_codewords
    with pytest.raises(ValueError, match="stragglers or cluster, not both"):
        CodedOptimizer(torch.optim.SGD(mlp().parameters(), lr=0.1), stragglers=Bernoulli(0.1),
                       cluster=SimulatedCluster(2, seed=0), policy="all")
    with pytest.raises(ValueError, match="needs deadline="):
        CodedOptimizer(torch.optim.SGD(mlp().parameters(), lr=0.1), cluster=SimulatedCluster(2, seed=0))
    with pytest.raises(TypeError, match="cluster must be a lwpd.cluster.Cluster"):
        CodedOptimizer(torch.optim.SGD(mlp().parameters(), lr=0.1), cluster=object(), policy="all")


@pytest.mark.parametrize("fast_path, min_blocks", [("blocks", 0.0), ("blocks", 0.25), ("patterns", 0.25)],
                         ids=["blocks-every-whole-block", "blocks-default", "patterns"])
@pytest.mark.parametrize("stragglers", [None, Bernoulli(0.2), Bernoulli(0.02)], ids=["none", "20%", "2%"])
@pytest.mark.parametrize("partition", ["neuron", "tensor"])
def test_exact_shortcut_matches_the_general_path(monkeypatch, stragglers, partition, fast_path, min_blocks):
    """Blocks whose codewords all arrived skip encoding and decoding ("blocks"), or every run
    of equal blocks is projected by its received sets' projectors ("patterns"); the gradient
    written into .grad and the recovered fraction are those of the general path (float64: 1e-12)."""
    from lwpd import _config

    monkeypatch.setattr(_config, "TORCH_PATTERN_PROJECTION", fast_path == "patterns")
    monkeypatch.setattr(_config, "TORCH_SHORTCUT_MIN_BLOCKS", min_blocks)
    monkeypatch.setattr(_config, "TORCH_SUBSET_ENCODE_FRACTION", 8.0 if min_blocks else 1e-9)  # both encodings

    X, y = torch.randn(64, 12, dtype=torch.float64), torch.randint(0, 3, (64,))
    grads, stats = {}, {}
    for shortcut in (True, False):
        monkeypatch.setattr(_config, "TORCH_EXACT_SHORTCUT", shortcut)
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).double()
        opt = CodedOptimizer(torch.optim.SGD(model.parameters(), lr=0.0), model=model, partition=partition,
                             stragglers=stragglers, seed=1)
        grads[shortcut], stats[shortcut] = [], []
        for _ in range(4):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(X), y).backward()
            opt.step()
            grads[shortcut].append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).clone())
            stats[shortcut].append(opt.last_stats)
    for fast, general in zip(grads[True], grads[False]):
        torch.testing.assert_close(fast, general, rtol=0, atol=1e-12)
    for fast, general in zip(stats[True], stats[False]):
        assert fast.received == general.received
        assert fast.recovered_fraction == pytest.approx(general.recovered_fraction, abs=1e-12)
        assert fast.relative_error == pytest.approx(general.relative_error, abs=1e-12)


def _coded_grads(monkeypatch, general, make_opt, model, steps=5, dtype=torch.float64):
    """``.grad`` and stats after each of ``steps`` coded steps, on the general path or not."""
    from lwpd import _config

    monkeypatch.setattr(_config, "TORCH_EXACT_SHORTCUT", not general)
    opt = make_opt(model)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(16, model[0].in_features, generator=gen, dtype=dtype)
    y = torch.randint(0, 3, (16,), generator=gen)
    out = []
    for _ in range(steps):
        one_step(model, opt, x, y)
        out.append((torch.cat([p.grad.reshape(-1) for p in model.parameters()]).clone(), opt.last_stats, opt))
    return out


@pytest.mark.parametrize("in_place", [True, False], ids=["in-place", "flat"])
@pytest.mark.parametrize("case", ["layer-chunks-first_k", "neuron-all-weight3", "ungrouped-partition", "float32"])
def test_pattern_projection_matches_the_general_path(monkeypatch, case, in_place):
    """The pattern path (per run of equal blocks, the projector of each block's received set)
    writes the general path's gradient, recovered fraction, relative error and counts,
    whatever the partition, chunking, policy, codeword weight or dtype: in the parameters'
    own gradients, only the blocks that need a projector ("in-place"), or by one kernel over
    the flat gradient ("flat"). (The failure rates lose more codewords than the codes
    tolerate in some steps, so the projections run.)"""
    from lwpd import _config
    from lwpd.torch import partition_parameters

    monkeypatch.setattr(_config, "TORCH_IN_PLACE_MAX_FRACTION", 1.0 if in_place else -1.0)
    taken = _record_projection_paths(monkeypatch)

    dtype = torch.float32 if case == "float32" else torch.float64

    def make_model():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(9, 7), torch.nn.Tanh(), torch.nn.Linear(7, 5), torch.nn.Tanh(),
                                   torch.nn.Linear(5, 3)).to(dtype)

    def make_opt(model):
        inner = torch.optim.SGD(model.parameters(), lr=0.05)
        if case == "layer-chunks-first_k":
            return CodedOptimizer(inner, model=model, partition="layer", chunks=3, policy="first_k", wait_for=0.6,
                                  stragglers=ShiftedExponential(1.0, 1.0), seed=3, n_workers=5)
        if case == "neuron-all-weight3":
            return CodedOptimizer(inner, model=model, partition="neuron", max_weight=3, policy="all", redundancy=1.5,
                                  stragglers=Bernoulli(0.3), seed=4, n_workers=7)
        if case == "ungrouped-partition":  # a ParameterPartition is used as given: runs of sizes alternate
            return CodedOptimizer(inner, partition=partition_parameters(model, "neuron", max_block=3),
                                  stragglers=Bernoulli(0.5), seed=5, n_workers=6)
        return CodedOptimizer(inner, model=model, stragglers=Bernoulli(0.2), seed=6)

    fast = _coded_grads(monkeypatch, False, make_opt, make_model(), dtype=dtype)
    general = _coded_grads(monkeypatch, True, make_opt, make_model(), dtype=dtype)
    opt = fast[0][2]
    assert opt._runs is not None and len(opt._runs) >= (2 if case == "ungrouped-partition" else 1)
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    for (g_fast, s_fast, _), (g_general, s_general, _) in zip(fast, general):
        torch.testing.assert_close(g_fast, g_general, rtol=0, atol=tol)
        assert s_fast.received == s_general.received
        assert s_fast.recovered_fraction == pytest.approx(s_general.recovered_fraction, abs=1e-12)
        assert s_fast.relative_error == pytest.approx(s_general.relative_error, abs=tol)
    assert taken and set(taken) == {"_project_in_place" if in_place else "_project_by_patterns"}
    assert any(s.received < s.n_codewords for _, s, _ in fast)


def _optimizer_cases():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(9, 7), torch.nn.Tanh(), torch.nn.Linear(7, 5)).double()
    yield model, dict(model=model, n_workers=10)
    yield model, dict(model=model, partition="layer", chunks=3, n_workers=5)
    yield model, dict(model=model, max_weight=3, redundancy=1.5, n_workers=7)
    yield model, dict(model=model, redundancy=1.0, n_workers=4)


@pytest.mark.parametrize("case", range(4))
def test_loss_tolerance_and_group_multiplicity_match_brute_force(case):
    """Each run's tolerance is the most codewords a block may lose, whichever, and still be
    spanned (numpy.linalg.matrix_rank over every subset of its codewords); each group's
    multiplicity is the most codewords of one block it holds (counted directly)."""
    import itertools
    from collections import Counter

    model, kw = list(_optimizer_cases())[case]
    opt = CodedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), seed=0, **kw)
    cb = opt.codebook
    dense = cb.to_scipy().toarray()
    first = np.r_[0, np.cumsum(np.bincount(cb.block_of))]
    for run in opt._runs:
        block, offset = run.first_block, run.first
        base = dense[first[block] : first[block + 1], offset : offset + run.size]
        survives = [all(np.linalg.matrix_rank(np.delete(base, list(gone), axis=0)) == run.size
                        for gone in itertools.combinations(range(run.rows), t)) for t in range(run.rows + 1)]
        assert run.tolerance == (survives.index(False) - 1 if False in survives else run.rows)
    assert opt._tolerance == min(run.tolerance for run in opt._runs)
    per_group = np.split(opt._chunk_flat, opt._chunk_starts[opt.chunks:-1:opt.chunks])
    assert len(per_group) == opt.n_workers
    expected = [max(Counter(cb.block_of[codewords].tolist()).values()) for codewords in per_group]
    np.testing.assert_array_equal(opt._group_multiplicity, expected)


@pytest.mark.parametrize("case, policy", [(0, "deadline"), (0, "all"), (1, "deadline")],
                         ids=["10-workers-deadline", "10-workers-all", "3-chunks-2-per-block"])
def test_a_step_that_lost_fewer_codewords_than_the_code_tolerates_is_the_gradient_itself(monkeypatch, case, policy):
    """Failing workers whose codewords every block can spare (their groups hold at most
    ``tolerance`` codewords of any block, counting each group's most of one block: 1 with 10
    workers, 2 with 5 workers of 3 chunks each): nothing is projected -- no received set is
    even formed -- and the gradient, counts and error are the general path's (1e-12); steps
    that lost more are projected as before."""
    from lwpd import _config

    sets = []
    real = CodedOptimizer._received_patterns
    monkeypatch.setattr(CodedOptimizer, "_received_patterns", lambda self, m: sets.append(m.size) or real(self, m))
    X, y = torch.randn(32, 9, dtype=torch.float64), torch.randint(0, 5, (32,))
    runs = {}
    for general in (False, True):
        monkeypatch.setattr(_config, "TORCH_EXACT_SHORTCUT", not general)
        model, kw = list(_optimizer_cases())[case]
        opt = CodedOptimizer(torch.optim.SGD(model.parameters(), lr=0.01), stragglers=Bernoulli(0.2 if case == 0 else 0.3),
                             policy=policy, seed=2, **kw)
        runs[general] = []
        for _ in range(12):
            one_step(model, opt, X, y)
            lost_chunk = np.ones(len(opt._chunk_sizes), dtype=bool)
            lost_chunk[opt._last_arrived] = False
            groups = np.unique(np.flatnonzero(lost_chunk) // opt.chunks)
            runs[general].append((torch.cat([p.grad.reshape(-1) for p in model.parameters()]).clone(), opt.last_stats,
                                  int(opt._group_multiplicity[groups].sum())))
        if not general:
            assert opt._tolerance >= 1 and set(opt._group_multiplicity) == ({1} if case == 0 else {2})
    spared = [lost for _, s, lost in runs[False] if 0 < lost <= opt._tolerance]
    assert spared and len(sets) == sum(lost > opt._tolerance for _, _, lost in runs[False])
    for (g_fast, s_fast, lost), (g_general, s_general, _) in zip(runs[False], runs[True]):
        torch.testing.assert_close(g_fast, g_general, rtol=0, atol=1e-12)
        assert s_fast.received == s_general.received
        assert s_fast.recovered_fraction == pytest.approx(s_general.recovered_fraction, abs=1e-12)
        assert s_fast.relative_error == pytest.approx(s_general.relative_error, abs=1e-12)
        if lost <= opt._tolerance:
            assert s_fast.relative_error == 0.0 and s_fast.recovered_fraction == 1.0


def test_pattern_projection_is_only_for_the_default_codebook():
    import lwpd
    from lwpd import block_codebook, projective_codebook

    model = mlp()
    opt = CodedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model=model, seed=0)
    assert opt._runs is not None
    sizes = [p.numel() for p in model.parameters()]
    own = block_codebook(projective_codebook(4, max_weight=2), lwpd.Partition.uniform(sum(sizes), 4))
    opt = CodedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), codebook=own, partition="tensor", seed=0)
    assert opt._runs is None  # a user's codebook may not repeat a pattern per run: the general path decodes it


def test_adding_a_param_group_is_refused_and_nothing_changes():
    """The partition and codebook cover the construction-time parameters: add_param_group is
    refused by name with the remedy, and the wrapped optimizer is left as it was."""
    model = torch.nn.Linear(4, 2)
    opt = CodedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), seed=0, n_workers=4)
    groups = len(opt.optimizer.param_groups)
    with pytest.raises(TypeError, match="to add param_group, add it to the wrapped optimizer"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(3))]})
    assert len(opt.optimizer.param_groups) == groups
    model(torch.randn(8, 4)).square().mean().backward()
    opt.step()  # still works
    assert opt.last_stats.n_codewords > 0


def test_step_time_is_in_the_cost_models_units():
    """A worker holding an average share of the codewords does one unit of work (lwpd.cost's
    uncoded shard gradient): without stragglers a step that waits for all takes the largest
    share, about 1, whatever the model's size (it read 747 on a 2,410-parameter MLP in
    codeword weights); with a fixed delay d it takes d times that."""
    for hidden in (8, 64):
        model = torch.nn.Sequential(torch.nn.Linear(6, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 3))
        x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
        times = {}
        for delay in (1.0, 3.0):
            opt = CodedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), seed=0, n_workers=4, policy="all",
                                 stragglers=FixedDelays([delay] * 4))
            one_step(model, opt, x, y)
            times[delay] = opt.last_stats.time
            work = opt._chunk_work[:, -1]
            np.testing.assert_allclose(work.mean(), 1.0)
            assert times[delay] == pytest.approx(delay * work.max())
        assert 1.0 <= times[1.0] < 1.5 and times[3.0] == pytest.approx(3 * times[1.0])
