"""The RNN forecaster: agent-centric features, the model, checkpoints, deterministic training."""

import dataclasses
import datetime

import numpy as np
import pytest
import torch

from predictor.rnn import (
    MIN_SIGMA_M,
    CheckpointError,
    RnnConfig,
    RnnForecaster,
    RnnPredictor,
    _layers,
    knot_weights,
    load_checkpoint,
    make_features,
    rotate_to_agent,
    save_checkpoint,
    to_agent,
    to_world,
)
from predictor.train import (
    Samples,
    TrainConfig,
    build_samples,
    hard_weights,
    mtp_loss,
    train_model,
)
from sim.forecast import History, empty_neighbors, future_from_tracks, history_from_tracks
from sim.tracks import Tracks

SMALL = RnnConfig(cell="gru", hidden=16, history_steps=10, horizon_steps=20, n_modes=3,
                  n_neighbors=2, social_hidden=8)


def straight_tracks(n_agents=4, n_steps=80, speed=12.0, heading=0.7, dt=0.1):
    """Agents driving straight lines at constant speed, side by side."""
    t = np.arange(n_steps) * dt
    c, s = np.cos(heading), np.sin(heading)
    x = np.stack([c * speed * t - s * 4.0 * a for a in range(n_agents)]).astype(np.float32)
    y = np.stack([s * speed * t + c * 4.0 * a for a in range(n_agents)]).astype(np.float32)
    vx = np.full_like(x, c * speed)
    vy = np.full_like(x, s * speed)
    return Tracks(t=t, x=x, y=y, vx=vx, vy=vy, heading=np.full_like(x, heading),
                  length=np.full(n_agents, 4.5, np.float32),
                  width=np.full(n_agents, 1.8, np.float32),
                  ids=np.arange(n_agents, dtype=np.int64), meta={"source": "test", "dt": dt})


def test_features_are_agent_centric_and_cv_is_exact_on_straight_tracks():
    tr = straight_tracks()
    rows, cols = np.array([0, 1]), np.array([30, 40])
    hist = history_from_tracks(tr, rows, cols, SMALL.history_steps, SMALL.n_neighbors)
    f = make_features(hist, SMALL)
    # the agent sits at the origin heading +x, moving at 12 m/s along x
    np.testing.assert_allclose(f.target[:, -1, :2], 0.0, atol=1e-4)
    np.testing.assert_allclose(f.target[:, :, 2], 12.0, atol=1e-3)
    np.testing.assert_allclose(f.target[:, :, 3], 0.0, atol=1e-3)
    np.testing.assert_allclose(f.target[:, 0, 0], -12.0 * SMALL.history_steps * 0.1, atol=1e-3)
    # neighbours 4 m to the side appear at y = +-4 in the agent frame
    assert f.nb_mask.all()
    np.testing.assert_allclose(np.abs(f.neighbors[0, 0, 1]), 4.0, atol=1e-3)
    fut = future_from_tracks(tr, rows, cols, SMALL.horizon_steps)
    np.testing.assert_allclose(to_world(f.cv.astype(float), f.origin, f.rot), fut, atol=1e-3)


def test_inputs_constant_in_training_do_not_explode_elsewhere():
    # every vehicle 4.5 m long in training (as in NGSIM): a 12 m truck later must stay a few
    # sigmas away, not thousands
    tr = straight_tracks()
    hist = history_from_tracks(tr, np.array([0, 1, 2]), np.array([30, 40, 50]),
                               SMALL.history_steps, SMALL.n_neighbors)
    f = make_features(hist, SMALL)
    model = RnnForecaster(SMALL)
    model.set_normalisation(f)
    assert (model.nb_std >= 0.1 - 1e-7).all() and (model.target_std >= 0.1 - 1e-7).all()
    length = 8  # the neighbour feature column of the length
    assert model.nb_mean[length] == pytest.approx(4.5)
    z = (12.0 - model.nb_mean[length]) / model.nb_std[length]
    assert abs(float(z)) <= 75.0


def test_short_histories_are_padded_as_invalid():
    tr = straight_tracks()
    hist = history_from_tracks(tr, np.array([0]), np.array([30]), 4, 0)
    f = make_features(hist, SMALL)
    assert f.target.shape == (1, SMALL.history_steps + 1, 5)
    assert (f.target[0, :6, -1] == 0).all() and (f.target[0, 6:, -1] == 1).all()


def test_frame_changes_round_trip_and_write_float32_arrays_in_place():
    rng = np.random.default_rng(0)
    pts, origin = rng.normal(0, 50, (5, 3, 2)), rng.normal(0, 500, (5, 2))
    heading = rng.uniform(-np.pi, np.pi, 5)
    cos, sin = np.cos(heading), np.sin(heading)
    local = to_agent(pts, origin, cos, sin)
    assert local.dtype == np.float64
    np.testing.assert_allclose(to_world(local, origin, np.stack([cos, sin], 1)), pts, atol=1e-9)
    out = np.empty((5, 3, 2), np.float32)
    assert to_agent(pts, origin, cos, sin, out=out) is out
    assert np.array_equal(out, local.astype(np.float32))  # computed in float64, cast once
    ahead = rotate_to_agent(np.stack([cos, sin], 1)[:, None, :] * 3.0, cos, sin)
    np.testing.assert_allclose(ahead[:, 0], [[3.0, 0.0]] * 5, atol=1e-12)
    into = np.zeros((5, 3, 4), np.float32)  # a strided destination, as in make_features
    rotate_to_agent(pts, cos, sin, out=into[..., 1:3])
    assert np.array_equal(into[..., 1:3], rotate_to_agent(pts, cos, sin).astype(np.float32))
    assert (into[..., [0, 3]] == 0).all()
    back = np.full((5, 3, 2), np.nan)
    rot = np.stack([cos, sin], 1)
    assert to_world(local, origin, rot, out=back) is back
    assert np.array_equal(back, to_world(local, origin, rot))


def test_a_neighbour_without_a_recorded_size_gets_zeros_not_nans():
    tr = straight_tracks()
    hist = history_from_tracks(tr, np.array([0]), np.array([30]), SMALL.history_steps,
                               SMALL.n_neighbors)
    hist.nb_length[0, 0] = np.nan
    hist.nb_width[0, 1] = np.nan
    f = make_features(hist, SMALL)
    assert f.nb_mask[0].all() and np.isfinite(f.neighbors).all()
    assert f.neighbors[0, 0, 8] == 0.0 and f.neighbors[0, 1, 8] == pytest.approx(4.5)
    assert f.neighbors[0, 1, 9] == 0.0 and f.neighbors[0, 0, 9] == pytest.approx(1.8)


def test_neighbour_positions_at_a_missing_lag_step_are_zero_and_flagged():
    tr = straight_tracks()
    hist = history_from_tracks(tr, np.array([0]), np.array([30]), SMALL.history_steps,
                               SMALL.n_neighbors)
    lag = SMALL.nb_lag_steps[1]
    hist.nb_valid[0, 0, -1 - lag] = False
    f = make_features(hist, SMALL)
    nb = f.neighbors[0, 0]  # x, y now; x, y at lag 1; x, y at lag 2; ...; flags of lags 1, 2
    assert abs(nb[1]) == pytest.approx(4.0, abs=1e-3) and abs(nb[5]) == pytest.approx(4.0, abs=1e-3)
    assert nb[2] == nb[3] == 0.0 and nb[10] == 0.0 and nb[11] == 1.0


def test_a_float32_history_is_forecast_in_float64_world_coordinates(tmp_path):
    save_checkpoint(tmp_path / "m.pt", RnnForecaster(SMALL), {})
    pred = RnnPredictor.load(str(tmp_path / "m.pt"), k=3)
    tr = straight_tracks()
    far = dataclasses.replace(tr, x=tr.x + np.float32(1e5))  # float32 steps of 8 mm there
    hist = history_from_tracks(far, np.array([0, 1]), np.array([30, 40]), 10, 2)
    single = History(**{k: v.astype(np.float32) if getattr(v, "dtype", None) == np.float64
                        else v for k, v in vars(hist).items()})
    f = make_features(single, SMALL)
    assert f.origin.dtype == np.float64 and f.rot.dtype == np.float64  # the frame
    a, b = pred.predict(hist, 15), pred.predict(single, 15)
    assert b.xy.dtype == np.float64 and b.sigma_m.dtype == np.float64
    np.testing.assert_allclose(b.xy, a.xy, rtol=0, atol=1e-4)  # float32 sums: mm off
    np.testing.assert_allclose(b.sigma_m, a.sigma_m, rtol=1e-5)


def test_the_encoder_reads_every_stride_th_step_ending_now():
    model = RnnForecaster(dataclasses.replace(SMALL, encoder_stride=4))  # steps 2, 6, 10
    torch.manual_seed(0)
    target = torch.randn(3, SMALL.history_steps + 1, 5)
    with torch.no_grad():
        base = model.encode(target)
        for step in range(SMALL.history_steps + 1):
            moved = target.clone()
            moved[:, step] += 1.0
            assert torch.equal(model.encode(moved), base) == (step not in (2, 6, 10)), step


def test_forward_shapes_probabilities_and_positive_sigma():
    model = RnnForecaster(SMALL)
    b = 5
    xy, log_prob, sigma = model(torch.zeros(b, 11, 5), torch.zeros(b, 2, 12),
                                torch.zeros(b, 2, dtype=torch.bool), torch.zeros(b, 20, 2))
    assert xy.shape == (b, 3, 20, 2) and sigma.shape == (b, 3, 20, 2)
    np.testing.assert_allclose(log_prob.exp().sum(1).detach(), 1.0, atol=1e-6)
    assert (sigma > 0).all()


def test_the_forward_without_gradients_equals_the_training_forward():
    # without gradients the neighbour pool takes amax, with them max (whose gradient the
    # shipped checkpoints were trained with): the same values, ties between neighbours and
    # absent neighbours included
    model = RnnForecaster(dataclasses.replace(SMALL, n_neighbors=4, knots=4))
    torch.manual_seed(2)
    b = 6
    nb = torch.randn(b, 4, 12)
    nb[:, 1] = nb[:, 0]  # two identical neighbours: every pooled feature ties
    mask = torch.ones(b, 4, dtype=torch.bool)
    mask[1, 2:] = False
    mask[2] = False  # no neighbour at all
    inputs = (torch.randn(b, 11, 5), nb, mask, torch.randn(b, 20, 2))
    model.train()
    with_grad = model(*inputs)
    assert with_grad[0].requires_grad
    with torch.no_grad():
        no_grad = model(*inputs)
    with torch.inference_mode():
        inference = model(*inputs)
    for a, b2, c in zip(with_grad, no_grad, inference):
        assert torch.equal(a.detach(), b2) and torch.equal(b2, c)
    # and training keeps max's gradient: a tie's gradient goes to one of the tied neighbours
    # (amax would split it evenly, and the attention treats the two alike)
    nb = nb.clone().requires_grad_(True)
    xy, log_prob, sigma = model(inputs[0], nb, mask, inputs[3])
    (g,) = torch.autograd.grad(xy.square().sum() + sigma.sum() + log_prob.sum(), nb)
    tied = mask[:, 0] & mask[:, 1]
    assert tied.any() and not torch.equal(g[tied, 0], g[tied, 1])


def test_layers_called_by_their_functional_forms_equal_the_module_calls():
    # _layers skips nn.Module's call machinery: same floats, and the same dropout draws
    seq = torch.nn.Sequential(torch.nn.Linear(12, 8), torch.nn.ReLU(), torch.nn.Dropout(0.4),
                              torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Tanh())
    x = torch.randn(5, 3, 12, requires_grad=True)
    for training in (True, False):
        seq.train(training)
        torch.manual_seed(3)
        ref = seq(x)
        torch.manual_seed(3)
        out = _layers(x, *seq)
        assert torch.equal(out, ref)
        (g_ref,) = torch.autograd.grad(ref.sum(), x)
        (g_out,) = torch.autograd.grad(out.sum(), x)
        assert torch.equal(g_out, g_ref)
    assert not torch.equal(seq.train()(x), seq.eval()(x))  # the dropout does something


def test_knot_weights_interpolate_linearly_between_the_first_and_last_step():
    w = knot_weights(4, 10).double()  # knots at steps 0, 3, 6, 9
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-6)
    assert (w >= 0).all() and ((w > 0).sum(1) <= 2).all()
    knots = torch.tensor([1.0, 4.0, -2.0, 7.0], dtype=torch.float64)
    np.testing.assert_allclose((w @ knots)[[0, 3, 6, 9]], knots, atol=1e-6)
    np.testing.assert_allclose((w @ knots)[1:3], [2.0, 3.0], atol=1e-6)  # a straight line
    with pytest.raises(ValueError, match="knots"):
        dataclasses.replace(SMALL, knots=1)
    with pytest.raises(ValueError, match="knots"):
        dataclasses.replace(SMALL, knots=SMALL.horizon_steps + 1)


def test_a_model_with_knots_forecasts_piecewise_linear_residuals(tmp_path):
    cfg = dataclasses.replace(SMALL, knots=5)  # 20 steps: knots every 19 / 4 steps
    model = RnnForecaster(cfg)
    assert model.head_xy.out_features == cfg.n_modes * 2 * 5
    b = 4
    torch.manual_seed(0)
    inputs = (torch.randn(b, 11, 5), torch.randn(b, 2, 12), torch.ones(b, 2, dtype=torch.bool),
              torch.zeros(b, 20, 2))
    xy, log_prob, sigma = model(*inputs)
    assert xy.shape == (b, 3, 20, 2) and sigma.shape == (b, 3, 20, 2) and (sigma > 0).all()
    # residual / scale is linear between neighbouring knots (steps 0..4 lie between knot 0 at
    # step 0 and knot 1 at step 4.75)
    for out in (xy, sigma - MIN_SIGMA_M):
        unit = (out / model.out_scale.view(1, 1, -1, 1)).detach()
        second = unit[:, :, 2:5] - 2 * unit[:, :, 1:4] + unit[:, :, 0:3]
        np.testing.assert_allclose(second, 0.0, atol=1e-5)
    # the config round-trips through a checkpoint, and so do the forecasts
    save_checkpoint(tmp_path / "k.pt", model, meta={})
    loaded, _, _ = load_checkpoint(tmp_path / "k.pt")
    assert loaded.config.knots == 5
    again = loaded(*inputs)
    for a, b2 in zip((xy, log_prob, sigma), again):
        assert torch.equal(a, b2)


@pytest.mark.parametrize("knots", [0, 5])
def test_to_steps_equals_the_plain_formula_in_values_and_gradients(knots):
    # the offset and scale are added in place along F: the same floats as the plain sum, so
    # the shipped checkpoints' training commands keep reproducing them
    cfg = dataclasses.replace(SMALL, knots=knots)
    model = RnnForecaster(cfg)
    torch.manual_seed(1)
    out = torch.randn(4, cfg.n_modes * 2 * cfg.n_knots, requires_grad=True)
    cv = torch.randn(4, cfg.horizon_steps, 2)
    if knots:
        steps = torch.matmul(out.view(4, cfg.n_modes, 2, knots), model.interp).transpose(2, 3)
    else:
        steps = out.view(4, cfg.n_modes, cfg.horizon_steps, 2)
    scaled = steps * model.out_scale.view(1, 1, -1, 1)
    for offset, plain in ((cv, cv.unsqueeze(1) + scaled), (MIN_SIGMA_M, scaled + MIN_SIGMA_M)):
        fast = model.to_steps(out, offset)
        (g_plain,) = torch.autograd.grad((plain ** 3).sum(), out, retain_graph=True)
        (g_fast,) = torch.autograd.grad((fast ** 3).sum(), out)
        assert fast.shape == plain.shape
        assert torch.equal(fast, plain) and torch.equal(g_fast, g_plain)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_each_cell_trains_deterministically_and_round_trips(tmp_path, cell):
    cfg = dataclasses.replace(SMALL, cell=cell)
    tr = straight_tracks(n_steps=60)
    samples = build_samples([tr], cfg, stride_s=0.2)
    tc = TrainConfig(epochs=2, batch_size=16, threads=1, patience=5)
    paths = []
    for i in range(2):
        out = str(tmp_path / f"m{i}.pt")
        logs = train_model(samples, samples, cfg, tc, out, meta={"data": "straight"})
        assert len(logs) == 2 and np.isfinite(logs[-1].train_loss)
        paths.append(out)
    a, meta, _ = load_checkpoint(paths[0])
    b, _, _ = load_checkpoint(paths[1])
    for (k, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(va, vb), k
    assert meta["data"] == "straight" and a.config == cfg


def test_predictor_returns_world_frame_modes_and_respects_its_protocol(tmp_path):
    model = RnnForecaster(SMALL)
    with torch.no_grad():  # zero residuals: the model predicts constant velocity
        model.head_xy.weight.zero_()
        model.head_xy.bias.zero_()
    path = tmp_path / "cv_like.pt"
    save_checkpoint(path, model, {})
    pred = RnnPredictor.load(str(path), k=2)
    tr = straight_tracks()
    rows, cols = np.array([0, 2]), np.array([20, 30])
    hist = history_from_tracks(tr, rows, cols, 10, 2)
    p = pred.predict(hist, 15)
    assert p.xy.shape == (2, 2, 15, 2) and p.sigma_m.shape == (2, 2, 15, 2)
    np.testing.assert_allclose(p.prob.sum(1), 1.0)
    np.testing.assert_allclose(p.top(), future_from_tracks(tr, rows, cols, 15), atol=1e-3)
    with pytest.raises(ValueError, match="horizon"):
        pred.predict(hist, 21)
    slow = History(**{**{k: v for k, v in vars(hist).items() if k != "dt_s"}, "dt_s": 0.2})
    with pytest.raises(ValueError, match="0.1"):
        pred.predict(slow, 10)


def test_predicting_every_mode_agrees_with_the_top_k(tmp_path):
    torch.manual_seed(2)
    save_checkpoint(tmp_path / "m.pt", RnnForecaster(SMALL), {})
    tr = straight_tracks()
    hist = history_from_tracks(tr, np.array([0, 1, 3]), np.array([20, 30, 40]), 10, 2)
    every = RnnPredictor.load(str(tmp_path / "m.pt"), k=SMALL.n_modes).predict(hist, 15)
    top = RnnPredictor.load(str(tmp_path / "m.pt"), k=2).predict(hist, 15)
    order = np.argsort(-every.prob, axis=1, kind="stable")[:, :2]
    for a, b in ((every.xy, top.xy), (every.sigma_m, top.sigma_m)):
        assert np.array_equal(np.take_along_axis(a, order[:, :, None, None], 1), b)
    kept = np.take_along_axis(every.prob, order, 1)
    np.testing.assert_allclose(top.prob, kept / kept.sum(1, keepdims=True))


def test_mtp_loss_picks_the_closest_mode():
    gt = torch.zeros(1, 4, 2)
    xy = torch.stack([torch.full((4, 2), 5.0), torch.full((4, 2), 0.1)]).unsqueeze(0)
    loss, best = mtp_loss(xy, torch.log(torch.tensor([[0.5, 0.5]])), torch.ones(1, 2, 4, 2), gt)
    assert int(best[0]) == 1 and torch.isfinite(loss)


def test_hard_weights_count_the_samples_constant_velocity_gets_wrong_more():
    cv = torch.zeros(3, 4, 2)
    gt = torch.zeros(3, 4, 2)
    gt[1, -1] = torch.tensor([3.0, 4.0])  # 5 m off at the horizon (a brake, a lane change)
    w = hard_weights(gt, cv, 0.5)
    assert torch.allclose(w, torch.tensor([1.0, 3.5, 1.0]))
    # the weighted mean: uniform weights give the plain mean, a heavy sample dominates
    g = torch.Generator().manual_seed(0)
    xy = torch.randn(3, 2, 4, 2, generator=g)
    log_prob = torch.log_softmax(torch.randn(3, 2, generator=g), dim=-1)
    sigma = torch.rand(3, 2, 4, 2, generator=g) + 0.5
    plain, _ = mtp_loss(xy, log_prob, sigma, gt)
    uniform, _ = mtp_loss(xy, log_prob, sigma, gt, torch.ones(3))
    assert torch.allclose(plain, uniform)

    def grads(weight):
        x, lp = xy.clone().requires_grad_(), log_prob.clone().requires_grad_()
        mtp_loss(x, lp, sigma, gt, weight)[0].backward()
        return x.grad, lp.grad

    # a heavy sample dominates the regression; the mode classification stays a plain mean
    # (the layer acts on the probabilities)
    gx_heavy, gp_heavy = grads(torch.tensor([1e-6, 1.0, 1e-6]))
    gx_plain, gp_plain = grads(None)
    x1 = xy[1:2].clone().requires_grad_()
    mtp_loss(x1, log_prob[1:2], sigma[1:2], gt[1:2])[0].backward()
    assert torch.allclose(gx_heavy[1], x1.grad[0], atol=1e-5)
    assert gx_heavy[[0, 2]].abs().max() < 1e-5 < gx_plain[[0, 2]].abs().max()
    assert torch.allclose(gp_heavy, gp_plain)
    with pytest.raises(ValueError, match="hard_weight"):
        TrainConfig(hard_weight=-1.0)


def test_bad_checkpoints_are_refused_naming_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such"):
        load_checkpoint(str(tmp_path / "missing.pt"))
    text = tmp_path / "text.pt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="text.pt"):
        load_checkpoint(str(text))
    good = tmp_path / "good.pt"
    save_checkpoint(good, RnnForecaster(SMALL), {})
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="cut.pt"):
        load_checkpoint(str(cut))
    other = tmp_path / "other.pt"
    obj = torch.load(good, weights_only=True)
    obj["config"] = obj["config"].replace('"hidden": 16', '"hidden": 32')
    assert '"hidden": 32' in obj["config"]
    torch.save(obj, other)
    with pytest.raises(CheckpointError, match="state_dict"):
        load_checkpoint(str(other))
    wrong = tmp_path / "wrong.pt"
    torch.save({"format": "something else"}, wrong)
    with pytest.raises(CheckpointError, match="format"):
        load_checkpoint(str(wrong))
    evil = tmp_path / "evil.pt"
    torch.save({"format": "drivecast-rnn/1", "obj": datetime.date(2020, 1, 1)}, evil)
    with pytest.raises(CheckpointError, match="evil.pt.*Python objects"):
        load_checkpoint(str(evil))
    # a config out of range or of the wrong type, weights that are not finite floats
    for edit, needle in ((('"hidden": 16', '"hidden": "16"'), "hidden must be an integer"),
                         (('"history_steps": 10', '"history_steps": 1000000000'),
                          "history_steps must be an integer in 1..1000")):
        bad = tmp_path / "bad_config.pt"
        obj = torch.load(good, weights_only=True)
        obj["config"] = obj["config"].replace(*edit)
        torch.save(obj, bad)
        with pytest.raises(CheckpointError, match=f"field 'config': {needle}"):
            load_checkpoint(str(bad))
    for value in (torch.full((5,), float("nan")), torch.zeros(5, dtype=torch.int64)):
        bad = tmp_path / "bad_weights.pt"
        obj = torch.load(good, weights_only=True)
        obj["state_dict"]["target_mean"] = value
        torch.save(obj, bad)
        with pytest.raises(CheckpointError, match="'target_mean' is not a tensor of finite"):
            load_checkpoint(str(bad))


def test_resume_from_a_file_without_training_state_is_refused(tmp_path):
    tr = straight_tracks(n_steps=60)
    samples = build_samples([tr], SMALL, stride_s=0.5)
    out = tmp_path / "m.pt"
    save_checkpoint(f"{out}.resume", RnnForecaster(SMALL), {})  # a model, no optimizer state
    with pytest.raises(ValueError, match="m.pt.resume: field 'optimizer': missing"):
        train_model(samples, samples, SMALL, TrainConfig(epochs=1, threads=1), str(out),
                    resume=True)


def test_empty_history_gives_empty_prediction(tmp_path):
    path = tmp_path / "m.pt"
    save_checkpoint(path, RnnForecaster(SMALL), {})
    pred = RnnPredictor.load(str(path))
    h = History(xy=np.zeros((0, 11, 2)), vxy=np.zeros((0, 11, 2)), heading=np.zeros((0, 11)),
                valid=np.zeros((0, 11), bool), length=np.zeros(0), width=np.zeros(0),
                kind=np.zeros(0, np.int8), ids=np.zeros(0, np.int64), t_s=np.zeros(0),
                **empty_neighbors(0, 11), dt_s=0.1)
    p = pred.predict(h, 5)
    assert p.xy.shape == (0, 3, 5, 2)
    assert isinstance(Samples, type)


def test_loading_a_predictor_sets_one_torch_thread_before_any_operation(monkeypatch):
    # benchmark safety forks its workers after the parent loaded the checkpoint: a torch
    # that had run on several threads (an OpenMP pool) would hang the forked children
    threads = torch.get_num_threads()
    seen = []
    real_load = torch.load

    def load(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", load)
    try:
        torch.set_num_threads(2)
        RnnPredictor.load("sim")
        assert seen == [1] and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
