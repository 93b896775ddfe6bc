"""Adoption: a module takes over another module's state, and gives exactly that back.

An adapted module (an adapter layer, an adapted attention module) is built from the module it
replaces by adopting its state: the same ``weight``/``bias`` Parameters under the same names,
its buffers, submodules, hooks and plain attributes. Plain checkpoints therefore load into the
adapted model and back. What was adopted is recorded, together with the adopted module's own
class, so :meth:`Adopted.to_plain` (used by ``merge_and_unload``) can give back a module of
that class holding exactly those members with their current values — nothing the adapter
added.
"""
import copy
from typing import Optional

from torch import nn

#: The containers of an ``nn.Module`` whose members are adopted one by one.
MEMBER_CONTAINERS = ('_parameters', '_buffers', '_modules')


class Adopted:
    """Mixin for an ``nn.Module`` built by adopting another module's state.

    Attributes:
        original_class (type): The class of the adopted module (``to_plain`` builds one).
    """

    def _adopt(self, base: nn.Module) -> None:
        """Take over ``base``'s state; ``self`` must be a fresh ``nn.Module.__init__``-ed
        instance. Containers (parameters, buffers, hooks) are copied so the two objects do not
        share them; the tensors and submodules inside are the very same objects."""
        for key, value in base.__dict__.items():
            self.__dict__[key] = copy.copy(value) if isinstance(value, (dict, set)) else value
        self._adopted = {key: (tuple(value) if key in MEMBER_CONTAINERS else None)
                         for key, value in base.__dict__.items()}
        self._adopted_class = type(base)

    def _adopt_nothing(self) -> None:
        """For an adapted module that stands for no module of its own (an attention module's
        projection): nothing was adopted, so every parameter it holds is its own."""
        self._adopted = {key: () for key in MEMBER_CONTAINERS}
        self._adopted_class = None

    @property
    def original_class(self) -> Optional[type]:
        return self._adopted_class

    def adopted_members(self, container: str) -> tuple:
        """Names of the parameters, buffers or submodules adopted from the base module."""
        return self._adopted.get(container) or ()

    def to_plain(self) -> nn.Module:
        """A module of the adopted class: exactly what was adopted, with current values.

        The adopted attributes, parameters (merged or not), buffers, submodules and hooks come
        back; an adopted submodule that was itself replaced by an adapted module comes back as
        its own plain module. Nothing the adapter added comes back.
        """
        if self._adopted_class is None:
            raise TypeError(f'{getattr(self, "name", type(self).__name__)} adopted no module '
                            f'and has no plain form; its parent gives back the plain module')
        plain = self._adopted_class.__new__(self._adopted_class)
        nn.Module.__init__(plain)
        for key, members in self._adopted.items():
            value = self.__dict__[key]
            if members is not None:
                value = {member: value[member] for member in members}
                if key == '_modules':
                    value = {member: (module.to_plain() if isinstance(module, Adopted) else
                                      module) for member, module in value.items()}
            elif isinstance(value, (dict, set)):
                value = copy.copy(value)
            plain.__dict__[key] = value
        self._finish_plain(plain)
        return plain

    def _finish_plain(self, plain: nn.Module) -> None:
        """Adjust the plain module to what changed since adoption (a dense merge's groups)."""
