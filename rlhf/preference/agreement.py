"""How far annotators agree, and one consensus ordering from several rankings.

Every ranking arrives as a rank list in shown order, 1 = best and ties equal, so
``A > B = C > D`` is ``[1, 2, 2, 3]`` (what :meth:`rlhf.preference.ranking.Ranking.rank_list` gives).
Ranks are only compared with each other, so gaps (``[1, 1, 3]``) mean the same as dense
ranks (``[1, 1, 2]``). Results that a formula leaves undefined are ``nan``, never an error:
an annotator who ties everything has no Kendall tau, and one comparison ranked by one
annotator has no agreement.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

CONSENSUS_METHODS = ("ranked_pairs", "borda", "bradley_terry")
PER_ANNOTATOR_COLUMNS = ["user", "items", "tau_b_to_consensus"]
GOLD_COLUMNS = ["user", "gold_items", "pairwise_agreement", "exact_match"]

# Bradley-Terry: virtual tied comparisons added to every pair of completions per ranking, so
# that a completion ranked first by everyone still gets a finite strength
# (see bradley_terry_strengths).
BRADLEY_TERRY_PRIOR_TIES = 0.1
_BRADLEY_TERRY_TOLERANCE = 1e-12  # convergence: largest change of a log-strength
_BRADLEY_TERRY_MAX_ITERATIONS = 100_000
_EQUAL_LOG_STRENGTH = 1e-8  # log-strengths closer than this are a tie


def _rank_matrix(rank_lists: Sequence[Sequence[int]]) -> np.ndarray:
    """The rank lists as one array of shape ``(annotators, K)``; K >= 2, all the same."""
    lengths = {len(ranks) for ranks in rank_lists}
    if not lengths:
        raise ValueError("Need at least one rank list.")
    if len(lengths) > 1:
        raise ValueError(
            f"Rank lists of different lengths {sorted(lengths)} do not rank the same completions."
        )
    if lengths.pop() < 2:
        raise ValueError("A rank list needs at least two completions to compare.")
    return np.asarray([list(ranks) for ranks in rank_lists], dtype=float)


def _pair_relations(ranks: np.ndarray) -> np.ndarray:
    """The relation on each completion pair i < j: -1 (i better), 0 (tie) or 1 (j better).

    Args:
        ranks (np.ndarray): ranks of K completions, shape ``(K,)``.

    Returns:
        np.ndarray: one sign per pair in ``itertools.combinations`` order, shape ``(K(K-1)/2,)``.
    """
    first, second = _pairs(len(ranks))
    return np.sign(ranks[first] - ranks[second])


@functools.lru_cache(maxsize=16)
def _pairs(k: int) -> tuple[np.ndarray, np.ndarray]:
    """The index pairs i < j of K completions (asked once per ranking pair: cached)."""
    return np.triu_indices(k, k=1)


def pairwise_agreement(a: Sequence[int], b: Sequence[int]) -> float:
    """Share of the K(K-1)/2 completion pairs on which two rankings give the same relation.

    The relation is better, tied or worse, so a tie counts: ``A > B`` against ``A = B``
    disagrees, ``A = B`` against ``A = B`` agrees. This is the inter-annotator agreement
    rate of Ouyang et al. (2022), "Training language models to follow instructions with
    human feedback", §5.1, read over every pair of one ranking.

    Args:
        a (Sequence[int]): one annotator's ranks in shown order, length K >= 2.
        b (Sequence[int]): another annotator's ranks of the same K completions.

    Returns:
        float: in [0, 1]; 1 when both rankings order and tie the completions alike.
    """
    ranks = _rank_matrix([a, b])
    return float(np.mean(_pair_relations(ranks[0]) == _pair_relations(ranks[1])))


def kendall_tau_b(a: Sequence[int], b: Sequence[int]) -> float:
    """Kendall's tau-b between two rankings of the same K completions.

    tau_b = (concordant - discordant) / sqrt((n0 - n1) (n0 - n2)), where n0 = K(K-1)/2 and
    n1, n2 count the pairs tied in ``a`` and in ``b`` (Kendall 1945, "The treatment of ties
    in ranking problems", Biometrika 33(3)). Computed from the pair relations, as
    ``scipy.stats.kendalltau(a, b, variant="b")`` does (tested against it), without its
    per-call overhead: the Data tab asks for it once per pair of annotators per comparison.

    Args:
        a (Sequence[int]): one annotator's ranks in shown order, length K >= 2.
        b (Sequence[int]): another annotator's ranks of the same K completions.

    Returns:
        float: in [-1, 1]; ``nan`` when either ranking ties everything, where the
        denominator is zero and no correlation is defined.
    """
    ranks = _rank_matrix([a, b])
    first, second = _pair_relations(ranks[0]), _pair_relations(ranks[1])
    untied = float(np.count_nonzero(first)) * float(np.count_nonzero(second))
    if untied == 0:
        return math.nan
    return float(np.dot(first, second) / math.sqrt(untied))


def pairwise_wins(rank_lists: Sequence[Sequence[int]]) -> np.ndarray:
    """How many rankings put each completion strictly above each other one.

    Args:
        rank_lists (Sequence[Sequence[int]]): R rankings of the same K completions.

    Returns:
        np.ndarray: ``wins[i, j]`` = rankings with i better than j, shape ``(K, K)``;
        ties count for neither side, so ``R - wins[i, j] - wins[j, i]`` tied i and j.
    """
    ranks = _rank_matrix(rank_lists)
    return (ranks[:, :, None] < ranks[:, None, :]).sum(axis=0)


def dense_ranks(scores: Sequence[float], tolerance: float = 0.0) -> list[int]:
    """Dense ranks from scores, higher score better; scores within ``tolerance`` of the
    next better one share its rank (so ties chain: 0, 0.6, 1.2 with tolerance 1 all tie)."""
    scores = np.asarray(scores, dtype=float)
    order = np.argsort(-scores, kind="stable")
    ranks = np.empty(len(scores), dtype=int)
    rank = 1
    for previous, current in itertools.pairwise(order):
        ranks[previous] = rank
        if scores[previous] - scores[current] > tolerance:
            rank += 1
    ranks[order[-1]] = rank
    return ranks.tolist()


def _transitive_closure(edges: np.ndarray) -> np.ndarray:
    """``reach[i, j]``: a path of one or more edges leads from i to j (Warshall 1962)."""
    reach = edges.copy()
    for middle in range(len(reach)):
        reach |= reach[:, [middle]] & reach[[middle], :]
    return reach


def ranked_pairs_locks(rank_lists: Sequence[Sequence[int]]) -> np.ndarray:
    """The majorities that ranked pairs (Tideman) locks in, as a directed acyclic graph.

    A majority is i over j when more rankings put i above j than j above i; its strength is
    the margin ``wins[i, j] - wins[j, i]``, as in OpenAssistant's merging of rankings
    (Köpf et al. 2023, ``backend/oasst_backend/utils/ranking.py``). Majorities are locked
    strongest first, skipping any that would close a cycle with those already locked
    (Tideman 1987, "Independence of clones as a criterion for voting rules", Social Choice
    and Welfare 4(3)). Majorities of equal strength are taken together: those lying on a
    cycle among themselves and the locked ones are all skipped, so the result never depends
    on the order the completions were shown (Tideman instead breaks such ties with a
    tie-breaking ranking).

    Args:
        rank_lists (Sequence[Sequence[int]]): R rankings of the same K completions.

    Returns:
        np.ndarray: ``locked[i, j]`` is True when "i above j" is locked, shape ``(K, K)``.
    """
    wins = pairwise_wins(rank_lists)
    margins = wins - wins.T
    locked = np.zeros(margins.shape, dtype=bool)
    for strength in sorted(set(margins[margins > 0].tolist()), reverse=True):
        candidates = margins == strength
        reach = _transitive_closure(locked | candidates)
        locked |= candidates & ~reach.T  # i -> j closes a cycle exactly when j reaches i
    return locked


def _ranks_from_locks(locked: np.ndarray) -> list[int]:
    """Dense ranks from a DAG of "above" edges: each completion takes the first rank after
    every completion locked above it, so completions the graph leaves unordered can tie."""
    remaining = np.ones(len(locked), dtype=bool)
    ranks = np.zeros(len(locked), dtype=int)
    rank = 0
    while remaining.any():
        rank += 1
        unbeaten = remaining & ~(locked & remaining[:, None]).any(axis=0)
        ranks[unbeaten] = rank
        remaining &= ~unbeaten
    return ranks.tolist()


def borda_scores(rank_lists: Sequence[Sequence[int]]) -> np.ndarray:
    """Borda points summed over rankings (de Borda 1781, "Mémoire sur les élections au scrutin").

    In one ranking a completion earns one point per completion ranked below it and half a
    point per completion tied with it: a tie group shares the points of the places it
    covers equally, K minus its mid-rank (Kendall 1945). ``A > B = C > D`` gives 3, 1.5,
    1.5, 0.

    Args:
        rank_lists (Sequence[Sequence[int]]): R rankings of the same K completions.

    Returns:
        np.ndarray: points per completion in shown order, shape ``(K,)``; multiples of 0.5.
    """
    ranks = _rank_matrix(rank_lists)
    return sum(len(row) - stats.rankdata(row, method="average") for row in ranks)


def bradley_terry_strengths(
    rank_lists: Sequence[Sequence[int]], prior_ties: float = BRADLEY_TERRY_PRIOR_TIES
) -> np.ndarray:
    """Bradley-Terry strengths fitted to every completion pair of the rankings.

    Each ranking adds one comparison per completion pair; a tie is half a win for each
    side. Each ranking also adds ``prior_ties`` virtual ties per pair, which keep every
    strength finite (without them a completion that always wins has infinite strength;
    Ford 1957). Scaling them with the number of rankings gives unanimous panels of any
    size the same strengths and keeps the fit as quick for 500 rankings as for one
    (MM slows down as strengths run apart).

    The maximum likelihood strengths of P(i beats j) = g_i / (g_i + g_j) (Bradley & Terry
    1952) are found by the MM iteration of Hunter (2004), "MM algorithms for generalized
    Bradley-Terry models", Annals of Statistics 32(1), eq. (3):
    ``g_i <- W_i / sum_j N_ij / (g_i + g_j)``, with W_i the wins of i and N_ij the
    comparisons of i and j.

    Every ranking compares every pair once, so N_ij is the same for all pairs, and then the
    strengths are in the order of the wins W_i (Zermelo 1929): the consensus order is the
    Borda order, with strengths that say by how much.

    Args:
        rank_lists (Sequence[Sequence[int]]): R rankings of the same K completions.
        prior_ties (float): virtual tied comparisons per pair and ranking, > 0.

    Returns:
        np.ndarray: strengths in shown order with geometric mean 1, shape ``(K,)``.
    """
    if prior_ties <= 0:
        raise ValueError(f"prior_ties must be positive to keep strengths finite, not {prior_ties}.")
    strict_wins = pairwise_wins(rank_lists)
    ties = len(rank_lists) - strict_wins - strict_wins.T
    wins = strict_wins + 0.5 * ties + 0.5 * prior_ties * len(rank_lists)
    return np.exp(fit_bradley_terry(wins))


def fit_bradley_terry(
    wins: np.ndarray,
    tolerance: float = _BRADLEY_TERRY_TOLERANCE,
    max_iterations: int = _BRADLEY_TERRY_MAX_ITERATIONS,
) -> np.ndarray:
    """Maximum likelihood Bradley-Terry log-strengths from a matrix of (fractional) wins.

    The MM iteration of Hunter (2004), eq. (3): ``g_i <- W_i / sum_j N_ij / (g_i + g_j)``
    with ``W_i`` the wins of i and ``N_ij = wins[i, j] + wins[j, i]``. Batched: any leading
    axes are independent fits done together (bootstrap rounds, see ``rlhf.preference.arena``).

    A finite maximum exists only when every item has wins and losses along a strongly
    connected comparison graph (Ford 1957), so callers add virtual ties first, as
    :func:`bradley_terry_strengths` and ``rlhf.preference.arena.bradley_terry`` do.

    Args:
        wins (np.ndarray): ``wins[..., i, j]`` = how often i beat j (ties as half a win each
            way), shape ``(..., M, M)``; the diagonal is ignored.
        tolerance (float): stop when no log-strength changes by more than this.
        max_iterations (int): give up (RuntimeError) after this many updates.

    Returns:
        np.ndarray: log-strengths with mean 0 over the last axis, shape ``(..., M)``.
    """
    wins = np.array(wins, dtype=float)  # a copy: the diagonal is cleared below
    diagonal = np.arange(wins.shape[-1])
    wins[..., diagonal, diagonal] = 0.0
    comparisons = wins + np.swapaxes(wins, -1, -2)
    total_wins = wins.sum(axis=-1)
    log_strengths = np.zeros(wins.shape[:-1])
    for _ in range(max_iterations):
        strengths = np.exp(log_strengths)
        updated = np.log(
            total_wins / (comparisons / (strengths[..., :, None] + strengths[..., None, :])).sum(axis=-1)
        )
        updated -= updated.mean(axis=-1, keepdims=True)
        converged = np.max(np.abs(updated - log_strengths), initial=0.0) < tolerance
        log_strengths = updated
        if converged:
            return log_strengths
    raise RuntimeError(f"Bradley-Terry did not converge in {max_iterations} iterations.")


def consensus(rank_lists: Sequence[Sequence[int]], method: str = "ranked_pairs") -> list[int]:
    """One consensus ranking of K completions from several annotators' rankings.

    ``"ranked_pairs"`` orders by the locked majorities of :func:`ranked_pairs_locks`
    (completions it leaves unordered tie); ``"borda"`` by :func:`borda_scores`;
    ``"bradley_terry"`` by :func:`bradley_terry_strengths`. Equal scores tie.

    Args:
        rank_lists (Sequence[Sequence[int]]): R >= 1 rankings of the same K completions.
        method (str): one of ``CONSENSUS_METHODS``.

    Returns:
        list[int]: dense ranks in shown order, 1 = best, ties equal (length K).
    """
    if method == "ranked_pairs":
        return _ranks_from_locks(ranked_pairs_locks(rank_lists))
    if method == "borda":
        return dense_ranks(borda_scores(rank_lists))
    if method == "bradley_terry":
        log_strengths = np.log(bradley_terry_strengths(rank_lists))
        return dense_ranks(log_strengths, tolerance=_EQUAL_LOG_STRENGTH)
    raise ValueError(f"method must be one of {', '.join(CONSENSUS_METHODS)}, not {method!r}.")


def _is_missing(value: float | None) -> bool:
    return value is None or bool(np.isnan(value))


def krippendorff_alpha_ordinal(units: Sequence[Sequence[float | None]]) -> float:
    """Krippendorff's alpha for ordinal values, any number of coders, missing values allowed.

    Follows Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", §E:
    alpha = 1 - (n - 1) * sum_ck o_ck d_ck / sum_ck n_c n_k d_ck, where o_ck is the
    coincidence matrix (each unit's ordered value pairs weighted 1 / (m_u - 1)), n_c its
    margins, n their total, and the ordinal difference
    d_ck = (sum_{g=c..k} n_g - (n_c + n_k) / 2) ** 2. Units with fewer than two values
    are not pairable and drop out.

    Args:
        units (Sequence[Sequence[float | None]]): one row per unit, one column per coder,
            shape ``(units, coders)``; ``None`` (or ``nan``) where a coder gave no value.

    Returns:
        float: 1 for perfect agreement, 0 for agreement at chance level, below 0 for
        systematic disagreement; ``nan`` when no unit is pairable or only one value
        occurs, where expected disagreement is zero.
    """
    pairable = [
        values
        for values in ([value for value in unit if not _is_missing(value)] for unit in units)
        if len(values) >= 2
    ]
    if not pairable:
        return float("nan")
    categories = sorted({value for values in pairable for value in values})
    index = {value: position for position, value in enumerate(categories)}
    counts = np.zeros((len(pairable), len(categories)))
    for row, values in enumerate(pairable):
        for value in values:
            counts[row, index[value]] += 1
    weights = 1.0 / (counts.sum(axis=1) - 1)
    coincidences = (counts * weights[:, None]).T @ counts - np.diag(weights @ counts)
    margins = coincidences.sum(axis=1)
    # sum_{g=c..k} n_g - (n_c + n_k) / 2 is the distance between the categories' midpoints
    # on the cumulative margins.
    midpoints = np.cumsum(margins) - margins / 2
    differences = (midpoints[:, None] - midpoints[None, :]) ** 2
    expected = (np.outer(margins, margins) * differences).sum()
    if expected == 0:
        return float("nan")
    observed = (coincidences * differences).sum()
    return float(1 - (margins.sum() - 1) * observed / expected)


def nan_mean(values: list[float]) -> float:
    """Mean over the defined values; ``nan`` when there are none (without numpy's warning)."""
    defined = [value for value in values if not np.isnan(value)]
    return float(np.mean(defined)) if defined else float("nan")


def _overlapped(frame: pd.DataFrame) -> dict[object, dict[str, list]]:
    """The comparisons ranked by at least two annotators, in id order, each as user -> ranks
    in shown order (one pass over plain columns: a pandas group per comparison cost more
    than the figures at 100k rankings)."""
    by_comparison: dict[object, dict[str, list]] = {}
    for comparison_id, user, ranks in zip(frame["comparison_id"], frame["user"], frame["rank_list"]):
        by_comparison.setdefault(comparison_id, {})[user] = list(ranks)
    return {comparison_id: by_comparison[comparison_id] for comparison_id in sorted(by_comparison)
            if len(by_comparison[comparison_id]) >= 2}


def _annotator_pair_figures(overlapped: dict[object, dict[str, list]]) -> tuple[list[float], list[float]]:
    """Pairwise agreement and Kendall tau-b of every pair of annotators within each comparison."""
    agreements, taus = [], []
    for rank_lists in overlapped.values():
        for first, second in itertools.combinations(rank_lists.values(), 2):
            agreements.append(pairwise_agreement(first, second))
            taus.append(kendall_tau_b(first, second))
    return agreements, taus


def pairwise_figures(frame: pd.DataFrame) -> dict:
    """``items``, ``pairwise_agreement`` and ``kendall_tau_b`` of :func:`annotator_agreement`
    alone, without the consensus and Krippendorff's alpha (those cost most of its time):
    the Data tab's figures per round. Same ``frame`` as there."""
    overlapped = _overlapped(frame)
    agreements, taus = _annotator_pair_figures(overlapped)
    return {"items": len(overlapped), "pairwise_agreement": nan_mean(agreements), "kendall_tau_b": nan_mean(taus)}


def annotator_agreement(frame: pd.DataFrame, method: str = "ranked_pairs") -> dict:
    """Agreement figures over the comparisons that two or more annotators ranked.

    Within each such comparison every pair of annotators gives one pairwise agreement and
    one Kendall tau-b; the means are over all those annotator pairs together (undefined
    tau-b values left out). Each annotator's tau-b to the consensus (``method``, see
    :func:`consensus`) is averaged over the comparisons they ranked; the consensus
    includes the annotator's own ranking, which pulls it towards them, more so when few
    annotators share a comparison. Krippendorff's alpha takes each (comparison,
    completion) as a unit and each annotator's rank for it as that coder's value.

    Args:
        frame (pd.DataFrame): one row per ranking with columns ``comparison_id``, ``user``
            and ``rank_list`` (ranks in shown order), at most one row per user and comparison.
        method (str): the consensus method, one of ``CONSENSUS_METHODS``.

    Returns:
        dict: ``items`` (int, comparisons with overlap), ``pairwise_agreement``,
        ``kendall_tau_b``, ``krippendorff_alpha`` (floats, ``nan`` without overlap) and
        ``per_annotator`` (DataFrame with columns ``user``, ``items``,
        ``tau_b_to_consensus``, one row per annotator with overlap, sorted by user).
    """
    overlapped = _overlapped(frame)
    agreements, taus = _annotator_pair_figures(overlapped)
    units = []
    taus_to_consensus: dict[str, list[float]] = {}
    coders = sorted({user for rank_lists in overlapped.values() for user in rank_lists})
    for rank_lists in overlapped.values():
        agreed = consensus(list(rank_lists.values()), method)
        for user, ranks in rank_lists.items():
            taus_to_consensus.setdefault(user, []).append(kendall_tau_b(ranks, agreed))
        units += [
            [rank_lists[user][position] if user in rank_lists else None for user in coders]
            for position in range(len(agreed))
        ]
    per_annotator = pd.DataFrame(
        [(user, len(taus_to_consensus[user]), nan_mean(taus_to_consensus[user]))
         for user in coders],
        columns=PER_ANNOTATOR_COLUMNS,
    )
    return {
        "items": len(overlapped),
        "pairwise_agreement": nan_mean(agreements),
        "kendall_tau_b": nan_mean(taus),
        "krippendorff_alpha": krippendorff_alpha_ordinal(units),
        "per_annotator": per_annotator,
    }


def gold_agreement(rankings: pd.DataFrame, gold: dict[int, Sequence[int]]) -> pd.DataFrame:
    """How well each annotator matches the expected rankings of gold comparisons.

    Args:
        rankings (pd.DataFrame): one row per ranking with columns ``comparison_id``,
            ``user`` and ``rank_list`` (ranks in shown order).
        gold (dict[int, Sequence[int]]): expected ranks in shown order per gold comparison id.

    Returns:
        pd.DataFrame: one row per user in ``rankings``, sorted by user, with ``gold_items``
        (gold comparisons they ranked), ``pairwise_agreement`` (mean over those, see
        :func:`pairwise_agreement`) and ``exact_match`` (share ranked exactly as expected,
        ties included); both rates ``nan`` for a user with no gold item.
    """
    scores: dict[str, list[float]] = {user: [] for user in sorted(set(rankings["user"]))}
    for comparison_id, user, ranks in zip(
        rankings["comparison_id"], rankings["user"], rankings["rank_list"]
    ):
        if comparison_id in gold:
            scores[user].append(pairwise_agreement(list(ranks), gold[comparison_id]))
    return pd.DataFrame(
        [
            (user, len(agreements), nan_mean(agreements),
             nan_mean([float(agreement == 1.0) for agreement in agreements]))
            for user, agreements in scores.items()
        ],
        columns=GOLD_COLUMNS,
    )
