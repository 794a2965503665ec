"""Options defined once: a dataclass field carries its default, help and check; flags are made from it.

A config class (`train.TrainConfig`, `tune.SearchConfig`) declares each option as

    learning_rate: float = option(0.1, "Initial learning rate.", positive)

Constructing the config checks every field (`check_fields`, from `__post_init__`), and
`define_flags` / `from_flags` give the same options as absl flags, checked by the
same functions, so that a bad value is refused with one message whether it came from
Python or from the command line.
"""

import dataclasses
import types

from absl import flags


def option(default, help, check=None, choices=None):
    """A config field.

    Args:
        default: the default value.
        help: one line for `--help`.
        check: `(predicate, expected)`: the values the field takes, and how the error
            message says so (`"must be " + expected`); None: any value of its type.
        choices: the allowed values (or a function returning them, for sets known
            only at run time); the flag is then an enum.
    """
    return dataclasses.field(default=default, metadata=dict(help=help, check=check, choices=choices))


def at_least(bound):
    return (lambda value: value >= bound, f">= {bound}")


positive = (lambda value: value > 0, "> 0")
fraction = (lambda value: 0 <= value <= 1, "in [0, 1]")


def choices_of(field):
    choices = field.metadata.get("choices")
    return tuple(choices() if callable(choices) else choices) if choices is not None else None


def problem(field, value):
    """What is wrong with `value` for `field`, as the end of a sentence, or None."""
    choices = choices_of(field)
    if choices is not None and value is not None and value not in choices:
        return f"must be one of {', '.join(map(str, choices))}, got {value!r}"
    check = field.metadata.get("check")
    if check is not None and value is not None and not check[0](value):
        return f"must be {check[1]}, got {value!r}"
    return None


def check_fields(config):
    """Raises ValueError naming the first field of `config` whose value it does not take."""
    for field in dataclasses.fields(config):
        message = problem(field, getattr(config, field.name))
        if message:
            raise ValueError(f"{field.name} {message}.")


def check(condition, name, message):
    """A check across fields: ValueError `"<name> must be <message>"` unless `condition`."""
    if not condition:
        raise ValueError(f"{name} must be {message}.")


def _kind(field):
    """`(type, optional)` of a field's annotation (`float`, `int | None`, `tuple[int, ...]`)."""
    annotation, optional = field.type, False
    if isinstance(annotation, types.UnionType):
        members = [a for a in annotation.__args__ if a is not type(None)]
        annotation, optional = members[0], len(members) < len(annotation.__args__)
    return annotation, optional


def _item_type(annotation):
    args = getattr(annotation, "__args__", None)
    return args[0] if args else str


def from_flag_value(field, value):
    """A flag's parsed value as the field's type (lists of strings as tuples of items; an empty
    value of an optional field, `--student_init=`, as None)."""
    annotation, optional = _kind(field)
    if getattr(annotation, "__origin__", annotation) is not tuple:
        return None if optional and value == "" else value
    if not value:
        return None if optional else ()
    item = _item_type(annotation)
    return tuple(item(v) for v in value)


def define_flags(config_class, flag_values=flags.FLAGS):
    """Defines one absl flag per field of `config_class`, with its default, help and check.

    Returns:
        The flags' names: declare them key flags of the app's module
        (`flags.declare_key_flag`), so that its `--help` lists them.
    """
    defaults = config_class()
    for field in dataclasses.fields(config_class):
        default = getattr(defaults, field.name)
        annotation, _ = _kind(field)
        help = field.metadata.get("help", "")
        choices = choices_of(field)
        options = dict(flag_values=flag_values)
        if choices is not None and annotation is str:
            flags.DEFINE_enum(field.name, default, list(choices), help, **options)
        elif annotation is bool:
            flags.DEFINE_bool(field.name, default, help, **options)
        elif annotation is int:
            flags.DEFINE_integer(field.name, default, help, **options)
        elif annotation is float:
            flags.DEFINE_float(field.name, default, help, **options)
        elif getattr(annotation, "__origin__", annotation) is tuple:
            flags.DEFINE_list(field.name, [str(v) for v in default or ()], help, **options)
        else:
            flags.DEFINE_string(field.name, default, help, **options)
        flags.register_validator(field.name, _validator(field), flag_values=flag_values)
    return [field.name for field in dataclasses.fields(config_class)]


def _validator(field):
    def validate(value):
        try:
            value = from_flag_value(field, value)
        except ValueError:
            message = f"takes {_item_type(_kind(field)[0]).__name__} values, got {value!r}"
        else:
            message = problem(field, value)
        if message:
            raise flags.ValidationError(f"--{field.name} {message}.")
        return True

    return validate


def from_flags(config_class, flag_values=flags.FLAGS, **overrides):
    """The `config_class` of the parsed flags (raises ValueError for values that conflict)."""
    values = {
        field.name: from_flag_value(field, flag_values[field.name].value)
        for field in dataclasses.fields(config_class)
    }
    return config_class(**{**values, **overrides})


def read_flagfile(config_class, path):
    """The fields of `config_class` that a flagfile sets (those it includes too), as their types."""
    flag_values = flags.FlagValues()
    define_flags(config_class, flag_values)
    flag_values(["", f"--flagfile={path}"])
    return {
        field.name: from_flag_value(field, flag_values[field.name].value)
        for field in dataclasses.fields(config_class)
        if flag_values[field.name].present
    }


def flagfile(config_class, flag_values=flags.FLAGS):
    """The values of `config_class`'s flags, as the text of a flagfile that sets them all."""
    lines = [flag_values[field.name].serialize() for field in dataclasses.fields(config_class)]
    return "".join(f"{line}\n" for line in lines if line)
