"""The topology embedded in a CompactMD file: atoms, residues, chains and bonds, convertible to and from OpenMM,
mdtraj and MDAnalysis.

The codec uses it for spatial prediction: an atom is predicted from the atom before it when both are in the same
residue (so a water's hydrogens are predicted from its oxygen, and residues move as a unit), and water residues are
told apart from the solute so that each gets its own predictor.
"""

import hashlib
import json
import operator
from dataclasses import dataclass, field

import numpy as np

from openmmflash.compactmd import kernels

WATER_NAMES = frozenset({"HOH", "WAT", "SOL", "TIP3", "TIP4", "TIP5", "SPC", "T3P", "T4P", "TP3", "H2O", "TIP3P"})


@dataclass
class CompactTopology:
    """Columnar description of ``n`` atoms.

    Attributes
    ----------
    names, elements, resnames, chainids : list of str, length n
    resids : ndarray of int64, shape (n,)   residue number as written in the source (not necessarily unique)
    resindices : ndarray of int64, shape (n,)   0-based residue index, increasing along the atoms
    bonds : ndarray of int64, shape (m, 2)   0-based atom pairs
    """

    names: list
    elements: list
    resnames: list
    resids: np.ndarray
    resindices: np.ndarray
    chainids: list
    bonds: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))

    @property
    def nAtoms(self):
        return len(self.names)

    # ---------------------------------------------------------------- serialization
    def to_dict(self):
        return {
            "names": list(self.names),
            "elements": list(self.elements),
            "resnames": list(self.resnames),
            "resids": np.asarray(self.resids).tolist(),
            "resindices": np.asarray(self.resindices).tolist(),
            "chainids": list(self.chainids),
            "bonds": np.asarray(self.bonds).reshape(-1).tolist(),
        }

    def to_file_dict(self):
        """Compact form stored in file headers (format version 2): string columns joined by newlines (a list
        where a string holds a newline), integer columns as space-separated first differences; about 10x
        smaller after zstd than :meth:`to_dict` and faster to write and parse."""
        d = {"encoding": "columns-delta", "nAtoms": self.nAtoms}
        for k in ("names", "elements", "resnames", "chainids"):
            col = getattr(self, k)
            try:
                joined = "\n".join(col)
            except TypeError:  # non-str entries
                col = [str(v) for v in col]
                joined = "\n".join(col)
            d[k] = joined if joined.count("\n") == max(len(col) - 1, 0) else list(col)
        for k in ("resids", "resindices", "bonds"):
            a = np.asarray(getattr(self, k), np.int64).reshape(-1)
            d[k] = _ints_text(np.diff(a, prepend=0))
        return d

    @classmethod
    def from_dict(cls, d):
        """From :meth:`to_dict` or :meth:`to_file_dict` output."""
        if d.get("encoding") == "columns-delta":
            n = int(d["nAtoms"])
            col = lambda k: (d[k].split("\n") if n else []) if isinstance(d[k], str) else list(d[k])  # noqa: E731
            num = lambda k: np.cumsum(np.array(d[k].split(), np.int64))  # noqa: E731
            return cls(col("names"), col("elements"), col("resnames"), num("resids"), num("resindices"),
                       col("chainids"), num("bonds").reshape(-1, 2))
        if "encoding" in d:
            raise ValueError(f"unknown topology encoding {d['encoding']!r}; upgrade openmm-flash")
        return cls(list(d["names"]), list(d["elements"]), list(d["resnames"]), np.asarray(d["resids"], np.int64),
                   np.asarray(d["resindices"], np.int64), list(d["chainids"]),
                   np.asarray(d["bonds"], np.int64).reshape(-1, 2))

    def digest(self):
        """SHA-256 of the canonical JSON form; equal topologies give equal digests."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def subset(self, indices):
        """Topology of the atoms ``indices`` (0-based, increasing); bonds between kept atoms are kept."""
        indices = np.asarray(indices, np.int64)
        remap = -np.ones(self.nAtoms, np.int64)
        remap[indices] = np.arange(len(indices))
        bonds = remap[self.bonds] if len(self.bonds) else self.bonds
        bonds = bonds[(bonds >= 0).all(axis=1)] if len(bonds) else bonds
        _, resindices = np.unique(np.asarray(self.resindices)[indices], return_inverse=True)
        pick = lambda seq: [seq[i] for i in indices]  # noqa: E731
        return CompactTopology(pick(self.names), pick(self.elements), pick(self.resnames),
                               np.asarray(self.resids)[indices], resindices.astype(np.int64), pick(self.chainids),
                               bonds)

    # ---------------------------------------------------------------- prediction helpers
    def waterMask(self):
        """Boolean array, shape (n,): True for atoms of water residues.

        Water is recognized by residue name, by elements (a 3- to 5-atom residue O, H, H[, virtual sites]), or,
        when residue names are missing (e.g. LAMMPS data), as the 3- or 4-atom residues that occur at least 50
        times. The codec only uses the in-molecule transforms where they make the chunk smaller, so a false
        positive costs nothing but time."""
        n = self.nAtoms
        mask = np.zeros(n, bool)
        r = np.asarray(self.resindices)
        if not len(r):
            return mask
        starts = np.flatnonzero(np.r_[True, r[1:] != r[:-1]])
        sizes = np.diff(np.r_[starts, len(r)])
        # Python work per residue (not per atom), with the string tests done once per distinct value
        first = _pick(self.resnames, starts)
        named = {v for v in set(first) if str(v).upper() in WATER_NAMES}
        isw = np.fromiter(map(named.__contains__, first), bool, len(first))
        cand = np.flatnonzero(~isw & (sizes >= 3) & (sizes <= 5))
        if len(cand):
            s = starts[cand]
            el = [_pick(self.elements, s + j) for j in range(3)]
            up = {v: str(v).upper() for v in set(el[0]) | set(el[1]) | set(el[2])}
            o = np.fromiter((up[v] == "O" for v in el[0]), bool, len(s))
            h1 = np.fromiter((up[v] == "H" for v in el[1]), bool, len(s))
            h2 = np.fromiter((up[v] == "H" for v in el[2]), bool, len(s))
            isw[cand[o & h1 & h2]] = True
        unnamed = all(str(v).upper() in ("UNK", "", "X") for v in set(self.resnames))
        if unnamed and not isw.any():
            isw = np.isin(sizes, [s for s in (3, 4) if np.sum(sizes == s) >= 50])
        return np.repeat(isw, sizes)

    def sequenceMask(self):
        """Boolean array, shape (n,): True where atom i is in the same residue as atom i-1."""
        m = np.zeros(self.nAtoms, dtype=bool)
        r = np.asarray(self.resindices)
        m[1:] = r[1:] == r[:-1]
        return m

    # ---------------------------------------------------------------- conversions
    @classmethod
    def from_openmm(cls, topology):
        """From an ``openmm.app.Topology``."""
        atoms = list(topology.atoms())
        index = {a: k for k, a in enumerate(atoms)}
        bonds = np.array([[index[b[0]], index[b[1]]] for b in topology.bonds()], np.int64).reshape(-1, 2)
        return cls([a.name for a in atoms], [a.element.symbol if a.element is not None else "" for a in atoms],
                   [a.residue.name for a in atoms],
                   np.array([_int_or_index(a.residue.id, a.residue.index) for a in atoms], np.int64),
                   np.array([a.residue.index for a in atoms], np.int64),
                   [a.residue.chain.id for a in atoms], bonds)

    @classmethod
    def from_mdtraj(cls, topology):
        """From an ``mdtraj.Topology``."""
        atoms = list(topology.atoms)
        bonds = np.array([[b[0].index, b[1].index] for b in topology.bonds], np.int64).reshape(-1, 2)
        return cls([a.name for a in atoms], [a.element.symbol if a.element is not None else "" for a in atoms],
                   [a.residue.name for a in atoms], np.array([a.residue.resSeq for a in atoms], np.int64),
                   np.array([a.residue.index for a in atoms], np.int64),
                   [str(a.residue.chain.chain_id or a.residue.chain.index) for a in atoms], bonds)

    @classmethod
    def from_mdanalysis(cls, atoms):
        """From an MDAnalysis ``Universe`` or ``AtomGroup`` (missing attributes become empty strings)."""
        ag = atoms.atoms
        n = len(ag)
        get = lambda attr, default: list(map(str, getattr(ag, attr))) if hasattr(ag, attr) else [default] * n  # noqa
        names = get("names", "X")
        elements = get("elements", "") if hasattr(ag, "elements") else [_guess_element(a) for a in names]
        resnames = get("resnames", "UNK")
        resids = np.asarray(ag.resids, np.int64) if hasattr(ag, "resids") else np.zeros(n, np.int64)
        _, resindices = np.unique(np.asarray(ag.resindices), return_inverse=True)
        chains = get("chainIDs", "") if hasattr(ag, "chainIDs") else get("segids", "A")
        bonds = np.zeros((0, 2), np.int64)
        try:
            idx = ag.bonds.to_indices()
            local = -np.ones(ag.universe.atoms.n_atoms, np.int64)
            local[ag.indices] = np.arange(n)
            bonds = local[idx]
            bonds = bonds[(bonds >= 0).all(axis=1)].astype(np.int64)
        except Exception:  # noqa: BLE001  (no bond information: spatial prediction uses residues only)
            pass
        return cls(names, elements, resnames, resids, resindices.astype(np.int64), chains, bonds)

    @classmethod
    def generic(cls, nAtoms):
        """A topology with no information beyond the atom count (one residue per atom)."""
        return cls(["X"] * nAtoms, [""] * nAtoms, ["UNK"] * nAtoms, np.arange(1, nAtoms + 1, dtype=np.int64),
                   np.arange(nAtoms, dtype=np.int64), ["A"] * nAtoms)

    def to_mdtraj(self):
        """An ``mdtraj.Topology``."""
        import mdtraj

        top = mdtraj.Topology()
        chains, residues, atoms = {}, {}, []
        for k in range(self.nAtoms):
            cid = self.chainids[k]
            if cid not in chains:
                chains[cid] = top.add_chain(chain_id=cid or None)
            ri = int(self.resindices[k])
            if ri not in residues:
                residues[ri] = top.add_residue(self.resnames[k], chains[cid], resSeq=int(self.resids[k]))
            atoms.append(top.add_atom(self.names[k], _mdtraj_element(self.elements[k]), residues[ri]))
        for i, j in np.asarray(self.bonds):
            top.add_bond(atoms[int(i)], atoms[int(j)])
        return top

    def to_openmm(self):
        """An ``openmm.app.Topology``."""
        from openmmflash.stack import import_openmm

        import_openmm()
        from openmm import app

        top = app.Topology()
        chains, residues, atoms = {}, {}, []
        for k in range(self.nAtoms):
            cid = self.chainids[k]
            if cid not in chains:
                chains[cid] = top.addChain(cid)
            ri = int(self.resindices[k])
            if ri not in residues:
                residues[ri] = top.addResidue(self.resnames[k], chains[cid], str(int(self.resids[k])))
            try:
                element = app.Element.getBySymbol(self.elements[k]) if self.elements[k] else None
            except KeyError:
                element = None
            atoms.append(top.addAtom(self.names[k], element, residues[ri]))
        for i, j in np.asarray(self.bonds):
            top.addBond(atoms[int(i)], atoms[int(j)])
        return top


def _pick(seq, idx):
    """[seq[i] for i in idx] (C-level gather; idx int array)."""
    if len(idx) == 0:
        return []
    got = operator.itemgetter(*idx.tolist())(seq)
    return list(got) if len(idx) > 1 else [got]


def _ints_text(a):
    """``" ".join(map(str, a))`` for an int64 array, built with array operations (same text)."""
    a = np.asarray(a, np.int64).reshape(-1)
    if not a.size:
        return ""
    if kernels.HAVE_NUMBA:
        return kernels.ints_text(np.ascontiguousarray(a)).tobytes().decode("ascii")
    mag = np.abs(a)
    width = len(str(int(mag.max())))
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    chars = np.empty((a.size, width + 2), np.uint8)
    chars[:, 0] = ord("-")
    chars[:, 1:width + 1] = (mag[:, None] // powers) % 10 + ord("0")
    chars[:, width + 1] = ord(" ")
    ndigits = 1 + (mag[:, None] >= powers[:-1]).sum(axis=1) if width > 1 else np.ones(a.size, np.int64)
    keep = np.ones(chars.shape, bool)
    keep[:, 0] = a < 0
    keep[:, 1:width + 1] = np.arange(width)[None, :] >= (width - ndigits)[:, None]
    keep[-1, width + 1] = False
    return chars[keep].tobytes().decode("ascii")


def _int_or_index(resid, index):
    try:
        return int(resid)
    except (TypeError, ValueError):
        return int(index) + 1


def _guess_element(name):
    letters = "".join(c for c in name if c.isalpha())
    return letters[:1].upper() if letters else ""


def _mdtraj_element(symbol):
    from mdtraj.core import element

    try:
        return element.get_by_symbol(symbol) if symbol else element.virtual
    except KeyError:
        return element.virtual
