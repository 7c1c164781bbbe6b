"""Xen's live-migration stop rules: today's and the classic (Xen <= 4.5) ones.

``xen`` follows tools/libs/guest/xg_sr_save.c (Xen 4.20, unchanged in 4.23-unstable):
send_memory_live asks simple_precopy_policy before each batch; the batch is sent live even
when the answer is "stop", and suspend_and_send_dirty then sends only what was dirtied after
the last CLEAN.  ``xen-4.5`` follows tools/libxc/xc_domain_save.c (RELEASE-4.5.0): after each
iteration, stop when ``iter >= max_iters`` (DEF_MAX_ITERS 29: 30 rounds with the last),
``sent_this_iter + skip_this_iter < 50`` or ``total_sent > p2m_size * max_factor`` (3).
"""

from __future__ import annotations

SPP_TARGET_DIRTY_COUNT = 50  # xg_sr_save.c
SPP_MAX_ITERATIONS = 5  # xg_sr_save.c
DEF_MAX_ITERS = 29  # xc_domain_save.c (4.5)
DEF_MAX_FACTOR = 3  # xc_domain_save.c (4.5)


def spp_stop(iteration: int, dirty_count: int, max_iters: int, min_pages: int) -> bool:
    """simple_precopy_policy: stop when ``0 <= dirty_count < 50`` or ``iteration >= 5``
    (dirty_count is -1 when the policy is asked between a batch and the next CLEAN)."""
    return (0 <= dirty_count < min_pages) or iteration >= max_iters


def classic_stop(
    iteration: int,
    sent_this_iter: int,
    total_sent: int,
    p2m_size: int,
    max_iters: int,
    min_pages: int,
    max_factor: float,
) -> str | None:
    """xc_domain_save (4.5) after iteration ``iteration``: the reason to start the last
    iteration, or None to go on.  The skip count (pages dirtied again during the iteration)
    is folded into ``sent_this_iter``: the engine sends every page it was asked to."""
    if iteration >= max_iters:
        return f"xen-4.5: {iteration} iterations done (max_iters {max_iters})"
    if sent_this_iter < min_pages:
        return (
            f"xen-4.5: {sent_this_iter} pages sent in iteration {iteration}, fewer than {min_pages}"
        )
    if total_sent > p2m_size * max_factor:
        return f"xen-4.5: {total_sent:,} pages sent, over {max_factor:g}× the {p2m_size:,} pages"
    return None
