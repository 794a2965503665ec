"""The WRN model zoo: registry, parameter counts, attention taps."""

import numpy as np
import pytest

from ctkd_tf import models


def trainable_params(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


@pytest.mark.parametrize(
    "name, expected",
    # The reference networks' parameter counts (Zagoruyko & Komodakis; Rocket Launching).
    [("wrn16_1", 0.175e6), ("wrn40_1", 0.564e6), ("wrn16_2", 0.692e6), ("wrn28_10", 36.48e6)],
)
def test_parameter_counts_match_the_reference(name, expected):
    model = models.get(name, num_classes=10, input_shape=(32, 32, 3))
    assert trainable_params(model) == pytest.approx(expected, rel=0.005)


def test_registry_names_and_unknown_name():
    assert models.names() == ["wrn16_1", "wrn16_2", "wrn28_10", "wrn40_1", "wrn40_2"]
    with pytest.raises(ValueError, match="wrn99_1.*wrn16_1"):
        models.get("wrn99_1", num_classes=10)


@pytest.mark.parametrize("size, maps", [(32, (32, 16, 8)), (64, (64, 32, 16))])
def test_group_outputs_are_named_layers_at_any_input_size(size, maps):
    model = models.get("wrn16_2", num_classes=200, input_shape=(size, size, 3))
    for name, spatial, channels in zip(models.GROUP_OUTPUTS, maps, (32, 64, 128)):
        assert tuple(model.get_layer(name).output.shape) == (None, spatial, spatial, channels)
    assert model.output.shape == (None, 200)
    assert model(np.zeros((2, size, size, 3), "float32")).shape == (2, 200)


def test_weight_decay_is_pytorch_style_on_all_weights():
    model = models.wrn(10, 1, 3, (8, 8, 3), weight_decay=5e-4)
    assert len(model.losses) == len(model.trainable_weights)
    expected = 5e-4 / 2 * sum(float(np.sum(w.numpy() ** 2)) for w in model.trainable_weights)
    assert float(sum(model.losses)) == pytest.approx(expected, rel=1e-5)
    assert models.wrn(10, 1, 3, (8, 8, 3)).losses == []


@pytest.mark.parametrize("depth, width", [(12, 1), (4, 1), (16, 0)])
def test_bad_depth_or_width(depth, width):
    with pytest.raises(ValueError, match="depth|width"):
        models.wrn(depth, width, 10)
