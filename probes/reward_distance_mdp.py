"""STARC distances between reward functions of a tabular MDP (Skalse et al., ICLR 2024).

    mdp = TabularMDP(transition, gamma, initial)          # tau[s, a, s'], discount, mu_0[s]
    d = starc_distance(r1, r2, mdp, canonical="val", norm="l2")   # rewards R[s, a, s']; in [0, 1]

A STARC metric is ``d(R1, R2) = m(s(R1), s(R2))`` with the *standardised* reward
``s(R) = c(R) / n(c(R))``:

- ``c``, a canonicalisation function: linear, ``c(R)`` differs from ``R`` only by potential
  shaping (``R + gamma * phi(s') - phi(s)``) and S'-redistribution (changes of ``R(s, a, .)``
  that keep ``E_{S' ~ tau(s, a)} R(s, a, S')``), and ``c(R1) == c(R2)`` iff ``R1`` and ``R2``
  differ only by those two. Here (:data:`CANONICALISATIONS`):

  - ``"val"``, value-adjusted levelling: ``c(R)(s, a, s') = E_{S' ~ tau(s, a)}[R(s, a, S') -
    V^pi(s) + gamma * V^pi(S')]``, ``V^pi`` the value of a fixed policy ``pi`` (uniform by
    default) under ``R`` itself: the advantage ``Q^pi(s, a) - V^pi(s)``;
  - ``"minimal"``: the L2-minimal canonicalisation, ``R`` minus its orthogonal projection onto
    the span of potential shapings and S'-redistributions (``n(c(R)) <= n(R')`` for every
    ``R'`` equivalent to ``R``, for the uniform L2 norm over (s, a, s'));
  - ``"epic"``, EPIC's canonicalisation (Gleave et al. 2021) with coverage distributions
    ``D_S``, ``D_A`` (uniform by default): ``R(s, a, s') + gamma * E[R(s', A, S')] - E[R(s, A, S')]
    - gamma * E[R(S, A, S')]``. It removes potential shaping but ignores ``tau``, so it is *not*
    a canonicalisation function in the paper's sense: it does not remove S'-redistribution,
    and the regret bound below fails for it (a test builds the counterexample).

- ``n``, a norm (:data:`NORMS`: ``"l1"``, ``"l2"``, ``"linf"``, uniform over (s, a, s')); a
  reward with ``n(c(R)) == 0`` (every policy equally good) has ``s(R) = c(R) = 0``, the paper's
  convention;
- ``m``, here ``n(x - y) / 2`` with the same norm, so ``d`` lies in ``[0, 1]`` (triangle
  inequality on unit vectors), is 0 for equivalent rewards and 1 for ``R`` vs ``-R``.

The paper's soundness theorem: for any STARC metric there is a constant ``U`` (depending on
the MDP and on the choice of ``c``, ``n``, ``m``) such that for all ``R1``, ``R2`` and policies
``pi1``, ``pi2`` with ``J2(pi2) >= J2(pi1)``: ``J1(pi1) - J1(pi2) <= U * (max J1 - min J1) *
d(R1, R2)``. With ``pi1`` optimal for R1 and ``pi2`` optimal for R2 that bounds the normalised
worst-case regret (:func:`normalised_regret`). :func:`soundness_constant` computes a valid ``U``
for an MDP along the paper's proof (for L2 and a canonicalisation per the definition); the
paper only asserts one exists.

Contextual bandits (LLM reward models) are the gamma = 0 case: :mod:`probes.reward_distance`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from jaxtyping import Float

from probes.reward_distance import RewardDistanceError

Reward = Float[np.ndarray, "s a s2"]
Policy = Float[np.ndarray, "s a"]


@dataclass(frozen=True)
class TabularMDP:
    """Transition ``tau[s, a, s']`` (rows sum to 1), discount ``0 <= gamma < 1``, initial
    state distribution ``initial[s]``."""

    transition: Float[np.ndarray, "s a s2"]
    gamma: float
    initial: Float[np.ndarray, " s"]

    def __post_init__(self):
        t = np.asarray(self.transition, dtype=float)
        if t.ndim != 3 or t.shape[0] != t.shape[2]:
            raise RewardDistanceError(f"transition must be [state, action, next state], got shape {t.shape}")
        if np.any(t < 0) or not np.allclose(t.sum(-1), 1):
            raise RewardDistanceError("transition[s, a, :] must be a probability distribution for every (s, a)")
        if not 0 <= self.gamma < 1:
            raise RewardDistanceError(f"gamma must be in [0, 1), got {self.gamma}")
        mu = np.asarray(self.initial, dtype=float)
        if mu.shape != (t.shape[0],) or np.any(mu < 0) or not np.isclose(mu.sum(), 1):
            raise RewardDistanceError(f"initial must be a distribution over the {t.shape[0]} states")
        object.__setattr__(self, "transition", t)
        object.__setattr__(self, "initial", mu)

    @property
    def n_states(self) -> int:
        return self.transition.shape[0]

    @property
    def n_actions(self) -> int:
        return self.transition.shape[1]

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.transition.shape


def random_mdp(n_states: int, n_actions: int, gamma: float, rng: np.random.Generator) -> TabularMDP:
    """Transitions and initial distribution drawn from flat Dirichlet distributions."""
    return TabularMDP(rng.dirichlet(np.ones(n_states), size=(n_states, n_actions)), gamma,
                      rng.dirichlet(np.ones(n_states)))


def potential_shaping(reward: Reward, phi: Float[np.ndarray, " s"], gamma: float) -> Reward:
    """``R(s, a, s') + gamma * phi(s') - phi(s)``."""
    return reward + gamma * phi[None, None, :] - phi[:, None, None]


def _check_reward(reward, mdp: TabularMDP, name: str = "reward") -> Reward:
    r = np.asarray(reward, dtype=float)
    if r.shape != mdp.shape:
        raise RewardDistanceError(f"{name} must have the MDP's shape [state, action, next state] {mdp.shape}, "
                                  f"got {r.shape}")
    return r


# -- policies and returns --------------------------------------------------------------------------
def uniform_policy(mdp: TabularMDP) -> Policy:
    return np.full((mdp.n_states, mdp.n_actions), 1 / mdp.n_actions)


def policy_values(reward: Reward, mdp: TabularMDP, policy: Policy) -> Float[np.ndarray, " s"]:
    """``V^pi`` solved exactly: ``(I - gamma * P_pi) V = r_pi``."""
    p_pi = np.einsum("sa,sat->st", policy, mdp.transition)
    r_pi = np.einsum("sa,sat,sat->s", policy, mdp.transition, reward)
    return np.linalg.solve(np.eye(mdp.n_states) - mdp.gamma * p_pi, r_pi)


def occupancy(mdp: TabularMDP, policy: Policy) -> Reward:
    """Discounted occupancy of (s, a, s') transitions from ``initial``: ``J(pi) = sum(eta * R)``;
    it sums to ``1 / (1 - gamma)``."""
    p_pi = np.einsum("sa,sat->st", policy, mdp.transition)
    states = np.linalg.solve((np.eye(mdp.n_states) - mdp.gamma * p_pi).T, mdp.initial)
    return states[:, None, None] * policy[:, :, None] * mdp.transition


def policy_return(reward: Reward, mdp: TabularMDP, policy: Policy) -> float:
    """``J(pi) = E_{S0 ~ initial}[V^pi(S0)]``."""
    return float(mdp.initial @ policy_values(reward, mdp, policy))


def optimal_policy(reward: Reward, mdp: TabularMDP, tol: float = 1e-12, max_iter: int = 100_000) -> Policy:
    """A deterministic optimal policy by value iteration (greedy in Q once V has converged)."""
    r_sa = np.einsum("sat,sat->sa", mdp.transition, reward)
    v = np.zeros(mdp.n_states)
    for _ in range(max_iter):
        q = r_sa + mdp.gamma * mdp.transition @ v
        v_new = q.max(1)
        if np.max(np.abs(v_new - v)) <= tol * (1 - mdp.gamma) * max(1.0, np.max(np.abs(v_new))):
            v = v_new
            break
        v = v_new
    q = r_sa + mdp.gamma * mdp.transition @ v
    return np.eye(mdp.n_actions)[q.argmax(1)]


def return_range(reward: Reward, mdp: TabularMDP) -> tuple[float, float]:
    """``(min_pi J(pi), max_pi J(pi))`` (optimal policies of ``-R`` and ``R``)."""
    return (policy_return(reward, mdp, optimal_policy(-reward, mdp)),
            policy_return(reward, mdp, optimal_policy(reward, mdp)))


def normalised_regret(reward_true: Reward, reward_proxy: Reward, mdp: TabularMDP) -> float:
    """Regret under ``reward_true`` of an optimal policy of ``reward_proxy``, divided by
    ``max J - min J`` of ``reward_true`` (0 when every policy is equally good)."""
    low, high = return_range(reward_true, mdp)
    if high - low <= 1e-12 * max(1.0, abs(high)):
        return 0.0
    return (high - policy_return(reward_true, mdp, optimal_policy(reward_proxy, mdp))) / (high - low)


# -- canonicalisations ------------------------------------------------------------------------------
def epic_canonical(reward: Reward, mdp: TabularMDP, state_dist=None, action_dist=None) -> Reward:
    """EPIC's canonicalisation with coverage ``D_S`` x ``D_A`` x ``D_S`` (uniform by default);
    invariant to potential shaping only (it ignores the transitions)."""
    r = _check_reward(reward, mdp)
    d_s = np.full(mdp.n_states, 1 / mdp.n_states) if state_dist is None else np.asarray(state_dist, dtype=float)
    d_a = np.full(mdp.n_actions, 1 / mdp.n_actions) if action_dist is None else np.asarray(action_dist, dtype=float)
    phi = np.einsum("xat,a,t->x", r, d_a, d_s)  # E[R(x, A, S')]
    return r + mdp.gamma * phi[None, None, :] - phi[:, None, None] - mdp.gamma * float(d_s @ phi)


def val_canonical(reward: Reward, mdp: TabularMDP, policy: Policy | None = None) -> Reward:
    """Value-adjusted levelling: ``E_{S' ~ tau(s, a)}[R(s, a, S') - V^pi(s) + gamma V^pi(S')]``
    (the advantage of ``pi``, uniform by default, under ``R``), the same for every ``s'``."""
    r = _check_reward(reward, mdp)
    v = policy_values(r, mdp, uniform_policy(mdp) if policy is None else np.asarray(policy, dtype=float))
    adv = np.einsum("sat,sat->sa", mdp.transition, r + mdp.gamma * v[None, None, :]) - v[:, None]
    return np.broadcast_to(adv[:, :, None], mdp.shape).copy()


def equivalence_basis(mdp: TabularMDP) -> Float[np.ndarray, "sas2 k"]:
    """Columns spanning the rewards equivalent to 0 (flattened ``[s, a, s']``): potential
    shapings of each state's indicator and, per (s, a), the S'-redistributions (vectors over s'
    orthogonal to ``tau(s, a, .)``)."""
    s, a, _ = mdp.shape
    cols = []
    for x in range(s):
        phi = np.eye(s)[x]
        cols.append(potential_shaping(np.zeros(mdp.shape), phi, mdp.gamma).ravel())
    for x, y in itertools.product(range(s), range(a)):
        tau = mdp.transition[x, y]
        # orthogonal complement of tau within R^{s'}: the last s-1 left singular vectors
        u = np.linalg.svd(tau[:, None], full_matrices=True)[0][:, 1:]
        for k in range(u.shape[1]):
            block = np.zeros(mdp.shape)
            block[x, y] = u[:, k]
            cols.append(block.ravel())
    return np.stack(cols, axis=1)


def minimal_canonical(reward: Reward, mdp: TabularMDP) -> Reward:
    """The L2-minimal member of ``R``'s equivalence class: ``R`` minus its least-squares
    projection onto :func:`equivalence_basis`."""
    r = _check_reward(reward, mdp).ravel()
    basis = equivalence_basis(mdp)
    coef = np.linalg.lstsq(basis, r, rcond=None)[0]
    return (r - basis @ coef).reshape(mdp.shape)


CANONICALISATIONS: dict[str, Callable[[Reward, TabularMDP], Reward]] = {
    "val": val_canonical, "minimal": minimal_canonical, "epic": epic_canonical,
}
NORMS: dict[str, Callable[[np.ndarray], float]] = {
    "l1": lambda x: float(np.abs(x).sum()),
    "l2": lambda x: float(np.sqrt((x * x).sum())),
    "linf": lambda x: float(np.abs(x).max()),
}


def _choice(name: str, table: dict, what: str):
    if name not in table:
        raise RewardDistanceError(f"unknown {what} {name!r}; choose from {sorted(table)}")
    return table[name]


def standardise(reward: Reward, mdp: TabularMDP, canonical: str = "val", norm: str = "l2") -> Reward:
    """``c(R) / n(c(R))``; ``c(R)`` itself (0) when its norm is 0 (paper's convention)."""
    c = _choice(canonical, CANONICALISATIONS, "canonicalisation")(_check_reward(reward, mdp), mdp)
    size = _choice(norm, NORMS, "norm")(c)
    scale = NORMS["linf"](np.asarray(reward, dtype=float))
    return c if size <= 1e-12 * max(scale, 1.0) * c.size else c / size


def starc_distance(reward_a: Reward, reward_b: Reward, mdp: TabularMDP, canonical: str = "val",
                   norm: str = "l2") -> float:
    """``n(s(R_a) - s(R_b)) / 2``, in [0, 1] (see the module docstring)."""
    a = standardise(_check_reward(reward_a, mdp, "reward_a"), mdp, canonical, norm)
    b = standardise(_check_reward(reward_b, mdp, "reward_b"), mdp, canonical, norm)
    return NORMS[norm](a - b) / 2


# -- the regret bound ---------------------------------------------------------------------------------
def deterministic_policies(mdp: TabularMDP) -> list[Policy]:
    """All ``n_actions ** n_states`` deterministic policies (small MDPs only)."""
    eye = np.eye(mdp.n_actions)
    return [eye[list(choice)] for choice in itertools.product(range(mdp.n_actions), repeat=mdp.n_states)]


@dataclass(frozen=True)
class SoundnessConstant:
    """``U = 2 * diameter / min_range`` (L2 norm, metric L2 / 2).

    Attributes:
        diameter: ``max ||eta(pi) - eta(pi')||_2`` over deterministic policies (occupancy over
            (s, a, s')); the maximum over all policies, as the norm is convex and deterministic
            policies' occupancies are the vertices of the occupancy polytope.
        min_range: a lower bound of ``max J_x - min J_x`` over unit-L2 ``x`` in the image of the
            canonicalisation (``sqrt`` of the least eigenvalue there of the mean of ``v v^T`` over
            occupancy differences ``v``: the maximum of ``|<v, x>|`` is at least their RMS).
        U: the constant.
    """

    diameter: float
    min_range: float
    U: float


def soundness_constant(mdp: TabularMDP, canonical: str = "val") -> SoundnessConstant:
    """A constant ``U`` for which ``normalised_regret(R1, R2) <= U * starc_distance(R1, R2)``
    holds for every R1, R2 (L2 norm), following the paper's proof of soundness.

    With ``s_i`` the standardised rewards, ``J_{s_i}`` is a positive affine function of ``J_i``
    (the canonicalisation only shapes and redistributes), so with ``pi_i`` optimal for ``R_i``:
    ``J_{s1}(pi1) - J_{s1}(pi2) <= <eta(pi1) - eta(pi2), s1 - s2> <= diameter * 2 d`` and
    ``max J_{s1} - min J_{s1} >= min_range``. Needs a canonicalisation in the paper's sense
    (``"val"``, ``"minimal"``); small MDPs (it enumerates deterministic policies).
    """
    canon = _choice(canonical, CANONICALISATIONS, "canonicalisation")
    if canonical == "epic":
        raise RewardDistanceError("the regret bound needs a canonicalisation that removes S'-redistribution; "
                                  "EPIC's does not: choose from ['minimal', 'val']")
    n = int(np.prod(mdp.shape))
    image = np.stack([canon(e.reshape(mdp.shape), mdp).ravel() for e in np.eye(n)], axis=1)
    u, sv, _ = np.linalg.svd(image)
    basis = u[:, sv > 1e-9 * sv[0]]  # orthonormal basis of Im(c)
    etas = np.stack([occupancy(mdp, p).ravel() for p in deterministic_policies(mdp)])
    diffs = (etas[:, None, :] - etas[None, :, :]).reshape(-1, n)
    diameter = float(np.sqrt((diffs ** 2).sum(1).max()))
    proj = diffs @ basis
    second = proj.T @ proj / len(diffs)
    min_range = float(np.sqrt(max(np.linalg.eigvalsh(second).min(), 0.0)))
    return SoundnessConstant(diameter, min_range, 2 * diameter / min_range if min_range > 0 else float("inf"))
