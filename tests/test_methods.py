"""The registry of methods: each builds the model of the networks it names."""

import keras
import pytest

from ctkd_tf import CTKD, Distiller, methods
from ctkd_tf.config import TrainConfig

from conftest import tiny_wrn


@pytest.mark.parametrize("name", methods.names())
def test_each_method_builds_a_model_of_its_own_networks(name):
    method = methods.get(name)
    config = TrainConfig(method=name, expert_kd_weight=1.0, attention_target="both")
    student, scratch, expert = tiny_wrn(seed=0), tiny_wrn(seed=1), tiny_wrn(seed=2)
    model = method.compile(method.build(config, student, scratch, expert), keras.optimizers.SGD(0.1))
    assert model.student is student
    if method.distiller:
        assert isinstance(model, Distiller) and model.teacher is expert
        return
    assert isinstance(model, CTKD)
    assert (model.scratch_teacher is scratch) == method.scratch_teacher
    assert (model.expert_teacher is expert) == method.expert
    names = {term.name for term in model.loss_terms}
    assert ("hint_loss" in names) == method.scratch_teacher
    assert ("attention_loss" in names) == ("expert_kd_loss" in names) == method.expert
    # CTKD's own choice: with one trained network the expert's attention guides the student.
    assert model.attention_target == ("both" if name == "ctkd" else "student")


def test_searched_options_are_config_fields_and_unknown_methods_fail():
    fields = set(TrainConfig.__dataclass_fields__)
    for method in methods.METHODS.values():
        assert set(method.searched) <= fields
    with pytest.raises(ValueError, match="Unknown method 'distill'"):
        methods.get("distill")
    with pytest.raises(ValueError, match="not multi_worker with --method=kd"):
        TrainConfig(method="kd", strategy="multi_worker")
