"""Framework dependencies in ``sys.path`` order: C3 linearisation, each framework once.

A layer sees the frameworks it lists, flattened with C3 linearisation (Python's rule for
class hierarchies), the same order venvstacks uses.  Every framework's linearisation is
computed once and reused by the layers above it, so a stack of *n* frameworks costs
about *n* merges, whatever the shape of the graph: a diamond-shaped graph (each level
depending on both frameworks of the level below) is linear here, where linearising
every framework recursively again for each user of it grows exponentially with depth.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from venvstacks_docker.errors import SpecError


def c3_merge(sequences: Iterable[Sequence[str]]) -> list[str]:
    """Merge ``sequences`` the C3 way: repeatedly take the first head that is in no tail.

    The same result (and the same error) as the textbook loop, but each step is
    proportional to the number of sequences, not to their total length: a counter says
    how often each name occurs in the tails, and each sequence keeps a read position.
    """
    seqs = [list(s) for s in sequences if s]
    ends = [len(s) for s in seqs]
    pos = [0] * len(seqs)
    in_tails = Counter(name for s in seqs for name in s[1:])
    live = len(seqs)
    result: list[str] = []
    indexes = range(len(seqs))
    while live:
        for i in indexes:
            if pos[i] < ends[i] and not in_tails[seqs[i][pos[i]]]:
                head = seqs[i][pos[i]]
                break
        else:
            remaining = [seq[p:] for seq, p, end in zip(seqs, pos, ends, strict=True) if p < end]
            raise SpecError(
                f"framework dependency linearisation failed (remaining sequences: {remaining})",
                hint="reorder the 'frameworks' lists so they agree on a single order",
            )
        result.append(head)
        for i in indexes:
            p = pos[i]
            if p < ends[i] and seqs[i][p] == head:
                p += 1
                pos[i] = p
                if p < ends[i]:
                    in_tails[seqs[i][p]] -= 1  # it moved from the tail to the head
                else:
                    live -= 1
    return result


class FrameworkGraph:
    """Memoised C3 linearisations of one stack's frameworks.

    :param dependencies: each framework's name -> the frameworks it lists (direct ones).
    """

    def __init__(self, dependencies: Mapping[str, Sequence[str]]) -> None:
        self._deps = {name: tuple(deps) for name, deps in dependencies.items()}
        self._mro: dict[str, tuple[str, ...]] = {}
        self._merged: dict[tuple[str, ...], tuple[str, ...]] = {}

    def linearise(self, direct: Sequence[str]) -> tuple[str, ...]:
        """The frameworks a layer listing ``direct`` sees, in ``sys.path`` order."""
        key = tuple(direct)
        found = self._merged.get(key)
        if found is None:
            for name in key:
                self._ensure(name)
            # merging [mro(x), [x]] gives mro(x): skip the work
            found = self._mro[key[0]] if len(key) == 1 else tuple(c3_merge([*(self._mro[n] for n in key), key]))
            self._merged[key] = found
        return found

    def _ensure(self, name: str) -> None:
        """Compute ``name``'s own linearisation, dependencies first, without recursion."""
        if name in self._mro:
            return
        path, on_path = [name], {name}
        while path:
            top = path[-1]
            pending = next((d for d in self._deps[top] if d not in self._mro), None)
            if pending is None:
                self._mro[top] = (top, *self.linearise(self._deps[top]))
                on_path.discard(path.pop())
            elif pending in on_path:
                raise SpecError(f"framework dependency cycle through {pending!r}",
                                hint="a framework may only list frameworks defined above it")
            else:
                path.append(pending)
                on_path.add(pending)
