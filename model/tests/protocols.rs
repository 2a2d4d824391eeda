//! Protocol x property checks.  "finds_*" tests assert that loom FINDS the
//! violation (they fail if no explored interleaving violates the invariant);
//! "*_holds" tests assert that every explored interleaving is fine.
//!
//! Slot 0 initially maps subpage 0 of the THP (collapse must clear it and owes
//! a TLB flush for it); slot 1 is pte_none and is the target of the uffd
//! filler / poisoner / guard installer.
//!
//! `uffd_private = false` stands for every VMA that is not uffd-armed
//! MAP_PRIVATE: not uffd-registered at all (guard markers), or uffd-registered
//! MAP_SHARED shmem (UFFDIO_POISON); 7.3 takes the same path for both.

use model::*;

const UFFD: Actor = Actor::UffdCopy { slot: 1 };
const GUARD: Actor = Actor::GuardInstall { slot: 1 };
const POISON: Actor = Actor::UffdPoison { slot: 1 };
const RECLAIM: Actor = Actor::PtReclaim;
const PML: Actor = Actor::PmlHolder;

fn expect_violation(inv: &str, cfg: Config) {
    let what = format!("{cfg:?}");
    match find_violation(cfg) {
        None => panic!("loom found NO violation of {inv:?} for {what}; the model should have"),
        Some(msg) => {
            assert!(
                msg.contains(inv),
                "expected {inv:?}, loom found a different failure:\n{msg}"
            );
            eprintln!("=== found as expected ===\n{msg}\n");
        }
    }
}

fn expect_holds(cfg: Config) -> Stats {
    let what = format!("{cfg:?}");
    match explore(cfg) {
        Err(msg) => panic!("expected every interleaving to be fine, but:\n{msg}"),
        Ok(st) => {
            eprintln!("{what}\n  -> all {} executions fine; {st:?}", st.executions);
            // Non-vacuity: the actors really raced collapse.
            assert!(st.saw_success(), "collapse never succeeded: {st:?}");
            st
        }
    }
}

// ---- sanity: no concurrency, every protocol collapses -----------------------

#[test]
fn sanity_sequential_collapse_succeeds() {
    for p in [
        Protocol::PreFix2023,
        Protocol::HughV2,
        Protocol::Upstream73,
        Protocol::Ours,
        Protocol::FixedC73,
    ] {
        for split in [true, false] {
            for uffd in [true, false] {
                let cfg = Config::new(p, split, uffd);
                loom::model(move || {
                    let mm = Mm::new(cfg.clone());
                    assert_eq!(collapse(&mm), Outcome::Succeeded, "{cfg:?}");
                });
            }
        }
    }
}

// ---- (a) pre-fix 2023 --------------------------------------------------------

#[test]
fn a_prefix_finds_lost_uffd_pte_split() {
    expect_violation(
        INV_LOST_ENTRY,
        Config::new(Protocol::PreFix2023, true, true).actor(UFFD),
    );
}

#[test]
fn a_prefix_finds_lost_uffd_pte_nonsplit() {
    expect_violation(
        INV_LOST_ENTRY,
        Config::new(Protocol::PreFix2023, false, true).actor(UFFD),
    );
}

#[test]
fn a_prefix_finds_lost_guard_marker_split() {
    expect_violation(
        INV_LOST_ENTRY,
        Config::new(Protocol::PreFix2023, true, false).actor(GUARD),
    );
}

#[test]
fn a_prefix_finds_lost_guard_marker_nonsplit() {
    expect_violation(
        INV_LOST_ENTRY,
        Config::new(Protocol::PreFix2023, false, false).actor(GUARD),
    );
}

// ---- (b) Hugh's v2 as posted ---------------------------------------------------

#[test]
fn b_v2_finds_lost_tlb_flush_split() {
    // trylock(pml) fails (PML holder), ptl dropped, uffd fills slot 1, rescan
    // (count reset) aborts on it: the first pass's cleared slot 0 is never
    // flushed.
    expect_violation(
        INV_LOST_FLUSH,
        Config::new(Protocol::HughV2, true, true).actor(UFFD).actor(PML),
    );
}

#[test]
fn b_v2_nonsplit_uffd_holds() {
    // ptl == pml: no trylock, ptl never dropped, no window, no rescan.
    expect_holds(Config::new(Protocol::HughV2, false, true).actor(UFFD).actor(GUARD));
}

#[test]
fn b_v2_finds_lost_guard_marker_nonuffd_split() {
    // v2 rescans only for uffd-armed private VMAs.
    expect_violation(
        INV_LOST_ENTRY,
        Config::new(Protocol::HughV2, true, false).actor(GUARD).actor(PML),
    );
}

// ---- (c) upstream 7.3 ----------------------------------------------------------

#[test]
fn c_upstream_uffd_private_split_holds() {
    let st = expect_holds(
        Config::new(Protocol::Upstream73, true, true)
            .actor(UFFD)
            .actor(PML)
            .actor(RECLAIM),
    );
    assert!(st.saw_abort(), "{st:?}");
}

#[test]
fn c_upstream_uffd_private_guard_split_holds() {
    // On a uffd-armed private VMA 7.3 holds pml + ptl throughout, which also
    // keeps guard markers out.
    expect_holds(
        Config::new(Protocol::Upstream73, true, true)
            .actor(GUARD)
            .actor(PML)
            .actor(RECLAIM),
    );
}

#[test]
fn c_upstream_uffd_private_nonsplit_holds() {
    expect_holds(
        Config::new(Protocol::Upstream73, false, true)
            .actor(UFFD)
            .actor(GUARD)
            .actor(RECLAIM),
    );
}

#[test]
fn c_upstream_nonuffd_reclaim_split_holds() {
    // PT_RECLAIM may free the emptied table in the step 2->4 window (and make
    // spin_trylock/pmd_lock contend): the split-ptlock step-4 pmd_same
    // recheck catches it.  (Guard markers on non-uffd VMAs are the separate
    // tests below; no other actor fills a pte_none slot of a non-uffd VMA
    // while collapse holds the folio lock.)
    let st = expect_holds(Config::new(Protocol::Upstream73, true, false).actor(RECLAIM).actor(PML));
    assert!(
        st.table_reclaimed > 0 && st.saw_abort_because(ABORT_STEP4_PMD_CHANGED),
        "{st:?}"
    );
}

#[test]
fn c_upstream_finds_lost_guard_marker_nonuffd_split() {
    expect_violation(
        INV_LOST_ENTRY,
        Config::new(Protocol::Upstream73, true, false).actor(GUARD),
    );
}

#[test]
fn c_upstream_finds_lost_guard_marker_nonuffd_nonsplit() {
    expect_violation(
        INV_LOST_ENTRY,
        Config::new(Protocol::Upstream73, false, false).actor(GUARD),
    );
}

#[test]
fn c_upstream_finds_lost_poison_marker_shared_split() {
    // UFFDIO_POISON on uffd-registered MAP_SHARED shmem: no early pmd_lock,
    // the marker lands in the step 2 -> 4 window and is freed with the table.
    expect_violation(
        INV_LOST_ENTRY,
        Config::new(Protocol::Upstream73, true, false).actor(POISON),
    );
}

#[test]
fn c_upstream_finds_lost_poison_marker_shared_nonsplit() {
    expect_violation(
        INV_LOST_ENTRY,
        Config::new(Protocol::Upstream73, false, false).actor(POISON),
    );
}

#[test]
fn c_upstream_finds_wrong_table_removal_nonuffd_nonsplit_reclaim() {
    // ptl == pml: 7.3 skips the step-4 pmd_same recheck, so a PT_RECLAIM free
    // in the window makes collapse clear/free a pmd it no longer maps.
    expect_violation(
        INV_WRONG_TABLE,
        Config::new(Protocol::Upstream73, false, false).actor(RECLAIM),
    );
}

// ---- (d) ours ------------------------------------------------------------------

/// (d) must hold; with split ptlocks its trylock(pml) must have failed and the
/// relock + pmd_same + rescan path must have aborted at least once; with
/// ptl == pml there is no trylock at all, and an abort must have been seen.
fn expect_ours_holds(cfg: Config) -> Stats {
    let split = cfg.split_ptlocks;
    let st = expect_holds(cfg);
    if split {
        assert!(st.trylock_failed > 0 && st.rescan_abort > 0, "{st:?}");
    } else {
        assert!(st.trylock_failed == 0 && st.saw_abort(), "{st:?}");
    }
    st
}

#[test]
fn d_ours_uffd_private_split_holds() {
    // The (b) scenario: trylock fails, uffd fills slot 1 in the window, the
    // rescan aborts -- with the cumulative count the flush is not lost.
    expect_ours_holds(
        Config::new(Protocol::Ours, true, true)
            .actor(UFFD)
            .actor(PML)
            .actor(RECLAIM),
    );
}

#[test]
fn d_ours_uffd_private_guard_split_holds() {
    expect_ours_holds(
        Config::new(Protocol::Ours, true, true)
            .actor(UFFD)
            .actor(GUARD)
            .actor(PML),
    );
}

#[test]
fn d_ours_uffd_private_nonsplit_holds() {
    expect_ours_holds(
        Config::new(Protocol::Ours, false, true)
            .actor(UFFD)
            .actor(GUARD)
            .actor(RECLAIM),
    );
}

#[test]
fn d_ours_nonuffd_split_holds() {
    // Guard markers on a non-uffd VMA, PT_RECLAIM freeing the emptied table
    // while collapse waits for pml, the guard installer allocating a new table
    // there.  Needs 3 preemptions to reach the reclaim-in-the-fallback-window
    // interleavings (checked below), so this model runs with bound >= 3.
    let mut cfg = Config::new(Protocol::Ours, true, false)
        .actor(GUARD)
        .actor(PML)
        .actor(RECLAIM)
        .realloc(true);
    cfg.min_preemptions = Some(3);
    let st = expect_ours_holds(cfg);
    assert!(st.saw_abort_because("pmd_same failed after relock"), "{st:?}");
}

#[test]
fn d_ours_nonuffd_nonsplit_holds() {
    expect_ours_holds(
        Config::new(Protocol::Ours, false, false)
            .actor(GUARD)
            .actor(RECLAIM)
            .realloc(true),
    );
}

#[test]
fn d_ours_reclaim_in_fallback_window_split_holds() {
    // Smallest model of PT_RECLAIM freeing the table while collapse dropped
    // ptl to take pml (bound 3 needed, see README).
    let mut cfg = Config::new(Protocol::Ours, true, false).actor(PML).actor(RECLAIM);
    cfg.min_preemptions = Some(3);
    let st = expect_ours_holds(cfg);
    assert!(st.saw_abort_because("pmd_same failed after relock"), "{st:?}");
}

#[test]
fn d_ours_shared_poison_split_holds() {
    // UFFDIO_POISON on uffd-registered MAP_SHARED shmem lands in the
    // trylock-fallback window; the rescan aborts on the marker.
    expect_ours_holds(Config::new(Protocol::Ours, true, false).actor(POISON).actor(PML));
}

#[test]
fn d_ours_shared_poison_nonsplit_holds() {
    expect_ours_holds(
        Config::new(Protocol::Ours, false, false)
            .actor(POISON)
            .actor(RECLAIM)
            .realloc(true),
    );
}

#[test]
fn d_ours_uffd_realloc_split_holds() {
    let st = expect_ours_holds(
        Config::new(Protocol::Ours, true, true)
            .actor(UFFD)
            .actor(PML)
            .actor(RECLAIM)
            .realloc(true),
    );
    assert!(st.table_reclaimed > 0, "{st:?}");
}

// ---- deadlock detection is live ------------------------------------------------

#[test]
fn naive_nested_finds_deadlock_split() {
    // Blocking on pml while holding ptl inverts pml -> ptl (PT_RECLAIM's
    // zap_pte_table_if_empty order): loom must report a deadlock.
    // The table starts empty (a fully unmapped folio), so the reclaimer can
    // reach its pml -> ptl slow path while collapse holds ptl.
    // The PML holder makes the reclaimer's spin_trylock(pml) fail so that it
    // takes the blocking pml -> ptl path (zap_pte_table_if_empty()).
    let mut cfg = Config::new(Protocol::NaiveNested, true, false)
        .actor(RECLAIM)
        .actor(PML);
    cfg.initial = [Pte::None; NSLOTS];
    cfg.min_preemptions = Some(3);
    expect_violation(LOOM_DEADLOCK, cfg);
}

#[test]
fn ours_without_same_lock_skip_finds_deadlock_nonsplit() {
    // With SPLIT_PTE_PTLOCKS off, ptl == pml: spin_trylock() of the lock we
    // hold always fails, and the fallback then spins on it forever.
    expect_violation(LOOM_DEADLOCK, Config::new(Protocol::OursNoSameLockSkip, false, false));
}

// ---- (e) 7.3 + the two C fixes ---------------------------------------------------

/// (e) on a uffd-armed private VMA: the early pmd_lock path, which is (c)'s;
/// an installer can only land before step 2 (and makes collapse abort).
fn expect_fixed_c73_uffd_private_holds(split: bool, other: Actor) {
    let st = expect_holds(
        Config::new(Protocol::FixedC73, split, true)
            .actor(UFFD)
            .actor(other)
            .actor(RECLAIM),
    );
    assert!(st.saw_abort(), "{st:?}");
}

/// (e) on any other VMA (not uffd-registered, or uffd-registered MAP_SHARED):
/// `installer` and PT_RECLAIM (+ a new table if `realloc`) race the step 2 -> 4
/// window, the PML holder contends pml.  Both step-4 aborts must have been
/// taken: Fix B's rescan (the installer's entry in the window) and the
/// `pmd_same` recheck (the reclaimed table; Fix A when ptl == pml).
fn expect_fixed_c73_window_holds(split: bool, installer: Actor, realloc: bool) {
    let st = expect_holds(
        Config::new(Protocol::FixedC73, split, false)
            .actor(installer)
            .actor(PML)
            .actor(RECLAIM)
            .realloc(realloc),
    );
    assert!(
        st.saw_abort_because(ABORT_STEP4_RESCAN)
            && st.saw_abort_because(ABORT_STEP4_PMD_CHANGED)
            && st.table_reclaimed > 0
            && (st.table_reallocated > 0) == realloc,
        "{st:?}"
    );
}

#[test]
fn e_fixed_c73_uffd_private_split_holds() {
    expect_fixed_c73_uffd_private_holds(true, PML);
}

#[test]
fn e_fixed_c73_uffd_private_nonsplit_holds() {
    expect_fixed_c73_uffd_private_holds(false, POISON);
}

#[test]
fn e_fixed_c73_nonuffd_guard_split_holds() {
    expect_fixed_c73_window_holds(true, GUARD, true);
}

#[test]
fn e_fixed_c73_nonuffd_guard_nonsplit_holds() {
    expect_fixed_c73_window_holds(false, GUARD, true);
}

#[test]
fn e_fixed_c73_shared_poison_split_holds() {
    expect_fixed_c73_window_holds(true, POISON, false);
}

#[test]
fn e_fixed_c73_shared_poison_nonsplit_holds() {
    expect_fixed_c73_window_holds(false, POISON, false);
}

#[test]
fn e_fix_a_only_finds_lost_guard_marker_split() {
    expect_violation(
        INV_LOST_ENTRY,
        Config::new(Protocol::C73FixAOnly, true, false).actor(GUARD),
    );
}

#[test]
fn e_fix_a_only_finds_lost_guard_marker_nonsplit() {
    expect_violation(
        INV_LOST_ENTRY,
        Config::new(Protocol::C73FixAOnly, false, false).actor(GUARD),
    );
}

#[test]
fn e_fix_b_only_finds_wrong_table_removal_nonsplit_reclaim() {
    // The rescan of the (already reclaimed, all-none) table passes; without
    // Fix A nothing notices that the pmd no longer maps it.
    expect_violation(
        INV_WRONG_TABLE,
        Config::new(Protocol::C73FixBOnly, false, false).actor(RECLAIM),
    );
}
