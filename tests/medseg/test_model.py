from __future__ import annotations

import pytest
import torch

from apps.medseg.model import MedSegNet, decode_mask, encode_mask
from apps.medseg.objective import PairObjective

from .conftest import TINY_NET, loss_before_after


@pytest.mark.parametrize("encoding", ["onehot", "bits"])
@pytest.mark.parametrize("K", [2, 3, 6, 7, 9])
def test_mask_code_round_trip_is_exact(encoding, K):
    m = torch.randint(0, K, (3, 12, 12), generator=torch.Generator().manual_seed(K))
    code = encode_mask(m, K, encoding)
    assert code.shape[1] == (K if encoding == "onehot" else (K - 1).bit_length())
    assert set(code.unique().tolist()) <= {-1.0, 1.0}
    assert torch.equal(decode_mask(code, K, encoding), m)
    # small Gaussian noise on the code never flips a class
    assert torch.equal(decode_mask(code + 0.15 * torch.randn_like(code), K, encoding), m)


def test_bits_decoding_never_leaves_the_dictionary():
    x = torch.randn(4, 3, 8, 8) * 3  # arbitrary codes, K = 6 < 2**3
    assert decode_mask(x, 6, "bits").max() <= 5


def test_onehot_blend_of_two_classes_never_gives_a_third():
    a, b = encode_mask(torch.full((1, 4, 4), 3), 7, "onehot"), encode_mask(torch.full((1, 4, 4), 5), 7, "onehot")
    for w in torch.linspace(0, 1, 11):
        assert set(decode_mask(w * a + (1 - w) * b, 7, "onehot").unique().tolist()) <= {3, 5}


def _perturbed(attn_mode, cross_order="parallel"):
    torch.manual_seed(0)
    net = MedSegNet(**{**TINY_NET, "attn_mode": attn_mode, "cross_order": cross_order})
    with torch.no_grad():
        for p in net.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.05)
    return net.eval()


def test_untrained_model_outputs_zero_and_shapes():
    net = MedSegNet(**TINY_NET)
    img, msk = torch.randn(2, 1, 16, 16), torch.randn(2, net.mask_channels, 16, 16)
    p = net.vocab.encode_batch([net.vocab.parse("CT liver")] * 2)
    a, b = net(img, msk, torch.rand(2), torch.rand(2), p, p)
    assert a.shape == img.shape and b.shape == msk.shape
    assert a.abs().max() == 0 and b.abs().max() == 0


@pytest.mark.parametrize("mode,order,coupled", [("cross", "parallel", True), ("cross", "sequential", True),
                                                ("joint", "parallel", True), ("self", "parallel", False)])
def test_streams_interact_only_through_attention(mode, order, coupled):
    net = _perturbed(mode, order)
    img, msk = torch.randn(1, 1, 16, 16), torch.randn(1, net.mask_channels, 16, 16)
    t = torch.full((1,), 0.5)
    p = net.vocab.encode_batch([net.vocab.parse("CT liver")])
    a1, _ = net(img, msk, t, t, p, p)
    a2, _ = net(img, msk + 1.0, t, t, p, p)
    assert (not torch.allclose(a1, a2, atol=1e-6)) == coupled


def test_options_are_validated():
    with pytest.raises(ValueError, match="allowed: \\['cross', 'joint', 'self'\\]"):
        MedSegNet(**{**TINY_NET, "attn_mode": "bogus"})
    with pytest.raises(ValueError, match="mask_encoding"):
        MedSegNet(**{**TINY_NET, "mask_encoding": "grey"})
    with pytest.raises(ValueError, match="time_sampling"):
        PairObjective(time_sampling="sometimes")


def test_prompt_dropout_slots():
    obj = PairObjective(p_drop_image=0.1, p_drop_mask=0.1, p_drop_both=0.1)
    prompt, null = torch.tensor([[1.0, 0.0, 0.0]]).repeat(4, 1), torch.tensor([0.0, 0.0, 1.0])
    u = torch.tensor([0.05, 0.15, 0.25, 0.5])  # image only, mask only, both, none
    pa, pm = obj.drop_prompts(prompt, null, u)
    assert pa[:, 2].tolist() == [1, 0, 1, 0] and pm[:, 2].tolist() == [0, 1, 1, 0]


def test_independent_time_ablation_draws_different_times():
    torch.manual_seed(0)
    net = MedSegNet(**TINY_NET)
    seen = {}

    def spy(img, msk, t_img, t_msk, pa, pm):
        seen["t"] = (t_img.clone(), t_msk.clone())
        return torch.zeros_like(img), torch.zeros_like(msk)

    spy.encode_mask, spy.vocab = net.encode_mask, net.vocab
    batch = {"image": torch.zeros(8, 1, 16, 16), "mask": torch.zeros(8, 16, 16, dtype=torch.long),
             "prompt": net.vocab.encode_batch([net.vocab.parse("CT liver")] * 8)}
    PairObjective(time_sampling="shared", p_mask_given=0, p_image_given=0).loss(spy, batch)
    assert torch.equal(*seen["t"])
    PairObjective(time_sampling="independent", p_mask_given=0, p_image_given=0).loss(spy, batch)
    assert not torch.equal(*seen["t"])
    PairObjective(p_mask_given=1.0, p_image_given=0).loss(spy, batch)
    assert seen["t"][1].abs().max() == 0  # mask given clean


def test_training_reduces_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    net = MedSegNet(**TINY_NET)
    obj = PairObjective(p_drop_image=0, p_drop_mask=0, p_drop_both=0)
    m = torch.zeros(4, 16, 16, dtype=torch.long)
    m[:, 4:12, 4:10] = 1
    batch = {"image": (m[:, None].float() * 1.2 - 0.6), "mask": m,
             "prompt": net.vocab.encode_batch([net.vocab.parse("CT liver")] * 4)}
    before, after = loss_before_after(net, obj, batch, steps=40, evals=5)
    assert after < 0.7 * before


def test_prompts_are_routed_per_stream():
    """Image slot -> cond_a (image stream), mask slot -> cond_b (mask stream); the mask slot ignores modality."""
    net = _perturbed("self")  # no attention between the streams: each output sees only its own condition
    img, msk = torch.randn(1, 1, 16, 16), torch.randn(1, net.mask_channels, 16, 16)
    t = torch.full((1,), 0.5)
    v = net.vocab
    liver, spleen = v.encode_batch([v.parse("CT liver")]), v.encode_batch([v.parse("CT spleen")])
    a0, b0 = net(img, msk, t, t, liver, liver)
    a1, b1 = net(img, msk, t, t, spleen, liver)  # only the image prompt changes
    assert not torch.allclose(a0, a1) and torch.equal(b0, b1)
    a2, b2 = net(img, msk, t, t, liver, spleen)  # only the mask prompt changes
    assert torch.equal(a0, a2) and not torch.allclose(b0, b2)
    mr = v.encode_batch([v.parse("MR liver")])
    a3, b3 = net(img, msk, t, t, liver, mr)  # modality is not a mask-slot field
    assert torch.equal(b0, b3)
    a4, b4 = net(img, msk, t, t, mr, liver)
    assert not torch.allclose(a0, a4)


def test_prompt_vector_decodes_back():
    v = MedSegNet(**TINY_NET).vocab
    p = v.parse("modality=CT; pathology=lesion; labels=spleen,liver")
    assert v.decode(v.encode(p)) == p and v.decode(v.null()) is None


def test_old_global_condition_checkpoint_is_refused(tmp_path):
    from apps.medseg.generate import GenerateError, load_generator, save_generator

    net = MedSegNet(**TINY_NET)
    path = save_generator(tmp_path / "old.pt", net, TINY_NET, {})
    blob = torch.load(path, weights_only=True)
    sd = blob["state_dict"]
    sd["prompt_embed.weight"] = sd.pop("prompt_embed_image.weight")
    del sd["prompt_embed_mask.weight"]
    torch.save(blob, path)
    with pytest.raises(GenerateError, match="old prompt conditioning.*per stream"):
        load_generator(path)
