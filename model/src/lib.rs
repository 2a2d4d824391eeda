//! Host-side `loom` model of the locking protocols used by khugepaged's
//! collapse of a PTE-mapped THP (`try_collapse_pte_mapped_thp()` in
//! `mm/khugepaged.c`, Linux 7.3) against the actors that can install entries
//! into, or free, the PTE table while collapse has dropped its page-table lock.
//!
//! See `README.md` for the mapping to kernel code, the abstractions and the
//! results table.  The model is deliberately tiny: one PMD entry, a PTE table
//! of [`NSLOTS`] slots (plus one spare table that an actor may allocate after
//! the first one was reclaimed), the PTE lock(s) and the PMD lock.
//!
//! Every execution explored by loom ends with the main thread (which plays
//! collapse) joining all actors and checking the global invariants; violations
//! detected while locks are held are *recorded* and reported (by panicking)
//! only after the join, so that no panic ever unwinds through a loom lock
//! guard.  The panic message starts with one of the `INV_*` strings below and
//! is followed by the event trace of the offending interleaving.

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use loom::sync::{Condvar, Mutex};
use loom::thread;
// `Mm` is shared through a plain std Arc: loom's Arc is not needed (nothing to
// check about its refcount) and its Drop calls into the loom runtime, which
// aborts the process if it runs while unwinding from a loom-detected failure.
use std::sync::Arc;

/// Number of PTE slots in the modelled page table (HPAGE_PMD_NR is 512 in the
/// kernel; two slots are enough: one mapped subpage of the THP that collapse
/// must clear, and one `pte_none` slot that another actor can fill).
pub const NSLOTS: usize = 2;

/// Number of page tables in the model: table 0 is the one collapse works on;
/// table 1 is a spare that `__pte_alloc()` may install after table 0 has been
/// reclaimed (only if [`Config::realloc`]).
pub const NTABLES: usize = 2;

pub const INV_LOST_ENTRY: &str = "INVARIANT VIOLATED: page table freed with a live entry";
pub const INV_LOST_FLUSH: &str = "INVARIANT VIOLATED: owed TLB flush lost";
pub const INV_WRONG_TABLE: &str = "INVARIANT VIOLATED: collapse removed a page table that the pmd no longer maps";
pub const INV_DOUBLE_FREE: &str = "INVARIANT VIOLATED: page table freed twice";
pub const INV_ACCOUNTING: &str = "INVARIANT VIOLATED: folio ref / mm counter accounting mismatch";
pub const INV_UNCLEAN: &str = "INVARIANT VIOLATED: collapse did not succeed or abort cleanly";
/// loom's own panic message when every thread is blocked.
pub const LOOM_DEADLOCK: &str = "deadlock; threads";

/// `Outcome::Aborted` reason: the step-4 `pmd_same` recheck of (c)/(e) failed.
pub const ABORT_STEP4_PMD_CHANGED: &str = "step 4: pmd changed";
/// `Outcome::Aborted` reason: (e)'s step-4 rescan (Fix B) found an entry
/// installed while ptl was dropped.
pub const ABORT_STEP4_RESCAN: &str = "step 4: rescan found an entry installed in the window";

/// A kernel spinlock with a real `spin_trylock()`.
///
/// Built from a loom `Mutex<bool>` (held only for the instant of the state
/// change, never across anything else) and a `Condvar` for waiting, so that:
/// * `try_lock()` really fails when the lock is held (loom 0.7's own
///   `Mutex::try_lock()` does not work for this: a thread whose next
///   operation is `try_lock()` is marked *blocked* when another thread takes
///   the mutex, so the failing trylock is never explored and a false
///   deadlock is reported instead - seen with the PT_RECLAIM actor);
/// * a waiter is *blocked* (not spinning), so an ABBA lock inversion makes
///   every thread blocked and loom reports "deadlock" (a spin loop with
///   `yield_now()` instead lets loom starve the holder forever once there are
///   two spinners, and every model fails with "exceeded maximum number of
///   branches").
pub struct SpinLock {
    held: Mutex<bool>,
    released: Condvar,
}

pub struct SpinGuard<'a> {
    lock: &'a SpinLock,
}

impl SpinLock {
    pub fn new() -> Self {
        SpinLock {
            held: Mutex::new(false),
            released: Condvar::new(),
        }
    }
    /// `spin_trylock()`
    pub fn try_lock(&self) -> Option<SpinGuard<'_>> {
        let mut h = self.held.lock().unwrap();
        if *h {
            None
        } else {
            *h = true;
            Some(SpinGuard { lock: self })
        }
    }
    /// `spin_lock()` / `spin_lock_nested()`
    pub fn lock(&self) -> SpinGuard<'_> {
        let mut h = self.held.lock().unwrap();
        while *h {
            h = self.released.wait(h).unwrap();
        }
        *h = true;
        SpinGuard { lock: self }
    }
}

impl Default for SpinLock {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for SpinGuard<'_> {
    /// `spin_unlock()`
    fn drop(&mut self) {
        // Never call into loom while unwinding from a loom failure.
        if !std::thread::panicking() {
            *self.lock.held.lock().unwrap() = false;
            self.lock.released.notify_all();
        }
    }
}

/// A PTE value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pte {
    /// `pte_none()`
    None,
    /// present PTE mapping subpage `i` of the locked THP folio (page cache)
    File(usize),
    /// present anonymous PTE installed by UFFDIO_COPY on a MAP_PRIVATE VMA
    Anon,
    /// `PTE_MARKER_GUARD` (non-present) installed by MADV_GUARD_INSTALL
    Guard,
    /// `PTE_MARKER_POISONED` (non-present) installed by UFFDIO_POISON
    Poison,
}

/// Which collapse protocol to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// (a) 6.5-era code before a98460494b16: ptl dropped after step 2, pml
    /// taken at step 4, no rescan, no pmd_same recheck.
    PreFix2023,
    /// (b) Hugh Dickins' v2 (Aug 2023) as posted: trylock(pml) under ptl; on
    /// failure drop ptl, lock pml, relock ptl, and for uffd-armed private
    /// VMAs rescan step 2 with the cleared count reset (step 3 was already
    /// done for the first pass).
    HughV2,
    /// (c) upstream 7.3 `try_collapse_pte_mapped_thp()`.
    Upstream73,
    /// (d) ours: keep ptl from step 2 to removal, trylock(pml) (skipped when
    /// ptl == pml), fallback relock + pmd_same + rescan for every VMA,
    /// cumulative cleared count.
    Ours,
    /// (e) 7.3's C code with the two C fixes sent to linux-mm: at step 4
    /// (pml + ptl held, after ptl was dropped) Fix A rechecks `pmd_same`
    /// unconditionally (also when ptl == pml) and Fix B rescans the table,
    /// both aborting with the owed `flush_tlb_mm()` (step 3 already done).
    FixedC73,
    /// Negative control: (c) + Fix A only (no step-4 rescan).
    C73FixAOnly,
    /// Negative control: (c) + Fix B only (step-4 `pmd_same` still only if
    /// ptl != pml).
    C73FixBOnly,
    /// Negative control for deadlock detection: hold ptl and *block* on pml
    /// (lock-order inversion against pml -> ptl).  Not a proposed protocol.
    NaiveNested,
    /// Negative control: (d) without the `ptl == pml` special case, i.e.
    /// `spin_trylock(pml)` even when pml is the ptl we hold.
    OursNoSameLockSkip,
}

/// Concurrent actors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Actor {
    /// UFFDIO_COPY into `slot` (only meaningful on a uffd-armed VMA).
    UffdCopy { slot: usize },
    /// MADV_GUARD_INSTALL on `slot`.
    GuardInstall { slot: usize },
    /// UFFDIO_POISON into `slot` (any uffd-registered VMA, MAP_SHARED too).
    UffdPoison { slot: usize },
    /// MADV_DONTNEED with CONFIG_PT_RECLAIM freeing an empty PTE table.
    PtReclaim,
    /// Any other `pmd_lock()` user of the same PMD page (e.g. a huge fault or
    /// a collapse in a neighbouring 2 MiB range): makes `spin_trylock(pml)` fail.
    PmlHolder,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub protocol: Protocol,
    /// CONFIG_SPLIT_PTE_PTLOCKS: ptl is per-table; otherwise ptl == pml ==
    /// mm->page_table_lock.
    pub split_ptlocks: bool,
    /// `userfaultfd_armed(vma) && !(vma->vm_flags & VM_SHARED)`.
    pub uffd_private: bool,
    /// Installers (uffd, guard) may `__pte_alloc()` a fresh table if the pmd
    /// is none (after a PT_RECLAIM free).
    pub realloc: bool,
    pub actors: Vec<Actor>,
    /// Initial contents of table 0.
    pub initial: [Pte; NSLOTS],
    /// Raise loom's preemption bound to at least this for this model.
    pub min_preemptions: Option<usize>,
}

impl Config {
    pub fn new(protocol: Protocol, split_ptlocks: bool, uffd_private: bool) -> Self {
        Config {
            protocol,
            split_ptlocks,
            uffd_private,
            realloc: false,
            actors: Vec::new(),
            initial: [Pte::File(0), Pte::None],
            min_preemptions: None,
        }
    }
    pub fn actor(mut self, a: Actor) -> Self {
        self.actors.push(a);
        self
    }
    pub fn realloc(mut self, r: bool) -> Self {
        self.realloc = r;
        self
    }
}

/// Result of one collapse attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Table removed (step 4 done); `install_pmd` is not modelled.
    Succeeded,
    /// SCAN_NO_PTE_TABLE at the start: nothing to do.
    NoTable,
    /// Aborted (any SCAN_* failure, or the 7.3 step-4 pmd_same mismatch).
    Aborted(&'static str),
}

struct TableState {
    slots: [Pte; NSLOTS],
    freed: bool,
}

struct Table {
    /// The table's PTE lock; in the non-split configuration a clone of `pml`.
    ptl: Arc<SpinLock>,
    /// Protected by `ptl` (loom checks that every access is ordered by it).
    st: UnsafeCell<TableState>,
}

/// State owned by the collapse thread and inspected after the join.
struct CollapseView {
    /// "TLB of another CPU": `tlb[i]` means some CPU may still hold a cached
    /// translation of slot i of table 0 as it was initially.
    tlb: [bool; NSLOTS],
    /// Folio references / MM_FILEPAGES held on behalf of File PTEs; must equal
    /// the number of File PTEs still mapped at the end.
    file_refs: usize,
    outcome: Option<Outcome>,
}

/// The shared "mm".
pub struct Mm {
    cfg: Config,
    /// 0 = pmd_none, t + 1 = points to table t.  Written under pml, read
    /// locklessly (`pmdp_get_lockless()`).
    pmd: AtomicUsize,
    pml: Arc<SpinLock>,
    tables: Vec<Table>,
    /// Next spare table for `__pte_alloc()`; protected by pml.
    next_table: UnsafeCell<usize>,
    view: UnsafeCell<CollapseView>,
    /// Recorded violations and the event trace (not modelled by loom: plain
    /// std mutexes used only for bookkeeping, never held across a loom op).
    violations: std::sync::Mutex<Vec<String>>,
    trace: std::sync::Mutex<Vec<String>>,
}

// loom's UnsafeCell is !Sync; all accesses are under the model's locks (and
// loom verifies that causally), so sharing is fine.
unsafe impl Sync for Mm {}
unsafe impl Send for Mm {}

impl Mm {
    pub fn new(cfg: Config) -> Self {
        let pml = Arc::new(SpinLock::new());
        let tables = (0..NTABLES)
            .map(|t| Table {
                ptl: if cfg.split_ptlocks {
                    Arc::new(SpinLock::new())
                } else {
                    pml.clone()
                },
                st: UnsafeCell::new(TableState {
                    slots: if t == 0 { cfg.initial } else { [Pte::None; NSLOTS] },
                    freed: false,
                }),
            })
            .collect();
        let mut tlb = [false; NSLOTS];
        let mut file_refs = 0;
        for (i, p) in cfg.initial.iter().enumerate() {
            if let Pte::File(_) = p {
                tlb[i] = true;
                file_refs += 1;
            }
        }
        Mm {
            cfg,
            pmd: AtomicUsize::new(1),
            pml,
            tables,
            next_table: UnsafeCell::new(1),
            view: UnsafeCell::new(CollapseView {
                tlb,
                file_refs,
                outcome: None,
            }),
            violations: std::sync::Mutex::new(Vec::new()),
            trace: std::sync::Mutex::new(Vec::new()),
        }
    }

    // ---- bookkeeping -------------------------------------------------------

    fn ev(&self, who: &str, what: impl Into<String>) {
        let e = format!("{who}: {}", what.into());
        CUR_TRACE.with(|t| t.borrow_mut().push(e.clone()));
        self.trace.lock().unwrap().push(e);
    }

    fn violation(&self, inv: &str, detail: impl Into<String>) {
        let d = detail.into();
        self.ev("CHECK", format!("{inv} ({d})"));
        self.violations.lock().unwrap().push(format!("{inv}: {d}"));
    }

    // ---- page-table primitives ----------------------------------------------

    fn split(&self) -> bool {
        self.cfg.split_ptlocks
    }

    /// `pmdp_get_lockless()`: Some(table) or None for pmd_none.
    fn pmd_table(&self) -> Option<usize> {
        match self.pmd.load(SeqCst) {
            0 => None,
            v => Some(v - 1),
        }
    }

    fn ptl(&self, t: usize) -> &SpinLock {
        &self.tables[t].ptl
    }

    fn lock_pml(&self) -> SpinGuard<'_> {
        self.pml.lock()
    }

    fn get(&self, t: usize, i: usize) -> Pte {
        self.tables[t].st.with(|p| unsafe { (*p).slots[i] })
    }

    fn set(&self, t: usize, i: usize, v: Pte) {
        self.tables[t].st.with_mut(|p| unsafe { (*p).slots[i] = v })
    }

    fn all_none(&self, t: usize) -> bool {
        (0..NSLOTS).all(|i| self.get(t, i) == Pte::None)
    }

    /// `pte_offset_map_lock()`: map the table the pmd points to, lock its ptl,
    /// recheck the pmd did not change (retry if it did).
    fn map_lock(&self) -> Option<(usize, SpinGuard<'_>)> {
        loop {
            let t = self.pmd_table()?;
            let g = self.ptl(t).lock();
            if self.pmd_table() == Some(t) {
                return Some((t, g));
            }
            drop(g);
        }
    }

    /// `pmd_clear()` + `pte_free_tlb()`/`pte_free_defer()` of table `t`.
    /// Caller holds pml and t's ptl (they may be the same lock).
    fn free_table(&self, who: &str, t: usize) {
        self.pmd.store(0, SeqCst);
        let (slots, was_freed) = self.tables[t].st.with_mut(|p| unsafe {
            let was = (*p).freed;
            (*p).freed = true;
            ((*p).slots, was)
        });
        self.ev(who, format!("pmd_clear + free table {t} containing {slots:?}"));
        if was_freed {
            self.violation(INV_DOUBLE_FREE, format!("{who} freed table {t} again"));
        }
        for (i, s) in slots.iter().enumerate() {
            if *s != Pte::None {
                self.violation(INV_LOST_ENTRY, format!("{who} freed table {t} with slot {i} = {s:?}"));
            }
        }
    }

    /// `__pte_alloc()` -> `pmd_install()`: under pml, populate a none pmd
    /// with a fresh empty table (if the model has one left).
    fn pte_alloc(&self, who: &str) {
        let _g = self.lock_pml();
        if self.pmd_table().is_none() {
            let n = self.next_table.with_mut(|p| unsafe {
                let n = *p;
                if n < NTABLES {
                    *p += 1;
                }
                n
            });
            if n < NTABLES {
                self.pmd.store(n + 1, SeqCst);
                self.ev(who, format!("__pte_alloc: pmd -> new table {n}"));
            }
        }
    }

    // ---- collapse-side helpers -----------------------------------------------

    fn view<R>(&self, f: impl FnOnce(&mut CollapseView) -> R) -> R {
        self.view.with_mut(|p| unsafe { f(&mut *p) })
    }

    /// `flush_tlb_mm()` / the flush in `pmdp_collapse_flush()`.
    fn flush_tlb(&self, why: &str) {
        self.ev("collapse", format!("TLB flush ({why})"));
        self.view(|v| v.tlb = [false; NSLOTS]);
    }

    /// step 3: `folio_ref_sub()` + `add_mm_counter(-nr)`.
    fn account(&self, nr: usize) {
        if nr > 0 {
            self.ev("collapse", format!("step 3: account {nr} cleared PTEs"));
            self.view(|v| v.file_refs -= nr);
        }
    }

    /// `abort:` label: flush + account iff `nr` PTEs are counted as cleared.
    fn abort(&self, nr: usize, why: &'static str) -> Outcome {
        self.ev("collapse", format!("abort ({why}), nr_mapped_ptes = {nr}"));
        if nr > 0 {
            self.flush_tlb("abort path, nr_mapped_ptes > 0");
            self.account(nr);
        }
        Outcome::Aborted(why)
    }

    /// Step-4 abort of (c)/(e): `flush_tlb_mm(); goto unlock;` -- step 3 has
    /// already accounted the cleared PTEs, only their flush is still owed.
    fn abort_owed_flush(&self, why: &'static str) -> Outcome {
        self.ev("collapse", format!("abort ({why}): flush_tlb_mm, goto unlock"));
        self.flush_tlb("step 4 abort, PTEs cleared and accounted");
        Outcome::Aborted(why)
    }

    /// step 1, under ptl: every mapped PTE must be the right subpage.
    fn step1(&self) -> Result<usize, Outcome> {
        let Some((t, _g)) = self.map_lock() else {
            return Err(Outcome::NoTable);
        };
        for i in 0..NSLOTS {
            match self.get(t, i) {
                Pte::None => {}
                Pte::File(j) if j == i => {}
                Pte::Guard | Pte::Poison => return Err(Outcome::Aborted("step 1: SCAN_PTE_NON_PRESENT")),
                _ => return Err(Outcome::Aborted("step 1: not our folio")),
            }
        }
        self.ev("collapse", format!("step 1 ok on table {t}"));
        Ok(t)
    }

    /// One step-2 pass over table `t` (caller holds its ptl): clear our PTEs,
    /// count them into `nr`.
    fn step2(&self, t: usize, nr: &mut usize) -> Result<(), &'static str> {
        for i in 0..NSLOTS {
            match self.get(t, i) {
                Pte::None => {}
                Pte::File(j) if j == i => {
                    self.set(t, i, Pte::None);
                    *nr += 1;
                    self.ev(
                        "collapse",
                        format!("step 2: clear slot {i} of table {t} (no flush yet)"),
                    );
                }
                Pte::Guard | Pte::Poison => return Err("step 2: SCAN_PTE_NON_PRESENT (marker)"),
                p => {
                    self.ev("collapse", format!("step 2: slot {i} = {p:?} is not our folio"));
                    return Err("step 2: not our folio");
                }
            }
        }
        Ok(())
    }

    /// (b)/(d) with table `t`'s ptl held (`ptl`): `spin_trylock(pml)`; on
    /// failure drop ptl, `spin_lock(pml)`, `spin_lock_nested(ptl)`.  Returns
    /// pml's guard and whether ptl was dropped and retaken.
    fn trylock_pml_or_relock<'a>(&'a self, t: usize, ptl: &mut Option<SpinGuard<'a>>) -> (SpinGuard<'a>, bool) {
        if let Some(g) = self.pml.try_lock() {
            self.ev("collapse", "spin_trylock(pml) succeeded");
            return (g, false);
        }
        self.ev(
            "collapse",
            "spin_trylock(pml) failed: drop ptl, lock pml, relock ptl nested",
        );
        drop(ptl.take());
        let pml = self.lock_pml();
        *ptl = Some(self.ptl(t).lock());
        (pml, true)
    }

    /// step 4: `pmdp_collapse_flush()` + `pte_free_defer()` of the table
    /// collapse mapped (`t`).  Caller holds pml and (unless equal) ptl.
    fn remove_table(&self, t: usize) -> Outcome {
        match self.pmd_table() {
            Some(cur) if cur == t => {
                self.free_table("collapse", t);
                self.flush_tlb("pmdp_collapse_flush");
                Outcome::Succeeded
            }
            cur => {
                // The kernel would clear whatever the pmd holds and
                // pte_free_defer(pmd_pgtable(that)): a double free of table t
                // (already reclaimed) and/or freeing someone else's table.
                self.violation(
                    INV_WRONG_TABLE,
                    format!("collapse mapped table {t} but pmd now {cur:?}"),
                );
                self.pmd.store(0, SeqCst);
                self.flush_tlb("pmdp_collapse_flush");
                Outcome::Succeeded
            }
        }
    }
}

thread_local! {
    /// Copy of the current execution's trace (loom runs all model threads as
    /// coroutines on the test's OS thread), so that [`find_violation`] can show
    /// it even when the execution was torn down by loom itself (e.g. "exceeded
    /// maximum number of branches" on an ABBA spin).
    static CUR_TRACE: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

// ---- the collapse protocols ----------------------------------------------------

/// (a) pre-fix 2023.
fn collapse_prefix_2023(mm: &Mm, _t1: usize) -> Outcome {
    // pte_offset_map_nolock(); spin_lock(ptl)  (no pmd recheck in 2023)
    let Some(t) = mm.pmd_table() else {
        return mm.abort(0, "no table at step 2");
    };
    let mut nr = 0;
    {
        let _ptl = mm.ptl(t).lock();
        if let Err(why) = mm.step2(t, &mut nr) {
            return mm.abort(nr, why);
        }
        mm.ev("collapse", "spin_unlock(ptl) after step 2");
    }
    mm.account(nr);
    let _pml = mm.lock_pml();
    let _ptl = if mm.split() { Some(mm.ptl(t).lock()) } else { None };
    mm.ev("collapse", "step 4: pml + ptl held");
    mm.remove_table(t)
}

/// (b) Hugh's v2 as posted.
fn collapse_hugh_v2(mm: &Mm, _t1: usize) -> Outcome {
    let Some(t) = mm.pmd_table() else {
        return mm.abort(0, "no table at step 2");
    };
    let mut ptl = Some(mm.ptl(t).lock());
    let mut pml: Option<SpinGuard<'_>> = None;
    loop {
        // v2: "nr_ptes = 0" before (re)scanning; step 3 was already done for
        // the previous pass, so its entries are no longer counted anywhere.
        let mut nr = 0;
        if let Err(why) = mm.step2(t, &mut nr) {
            return mm.abort(nr, why);
        }
        mm.account(nr);
        if pml.is_some() || !mm.split() {
            break; // both locks held (or ptl == pml)
        }
        let (g, relocked) = mm.trylock_pml_or_relock(t, &mut ptl);
        pml = Some(g);
        if relocked && mm.cfg.uffd_private {
            mm.ev("collapse", "uffd private: rescan step 2 (count reset)");
            continue;
        }
        break;
    }
    let r = mm.remove_table(t);
    drop(ptl);
    drop(pml);
    r
}

/// Which of (e)'s C fixes [`collapse_c73`] applies on top of 7.3.
#[derive(Clone, Copy)]
struct C73Fixes {
    /// Fix A: recheck `pmd_same` at step 4 also when ptl == pml.
    recheck_always: bool,
    /// Fix B: rescan the table at step 4 (pml + ptl held) if ptl was dropped
    /// after step 2; abort with the owed flush on any non-none slot.
    rescan: bool,
}

/// (c) upstream 7.3 (no fixes) and (e) 7.3 + Fix A and/or Fix B.
fn collapse_c73(mm: &Mm, fixes: C73Fixes) -> Outcome {
    let mut pml: Option<SpinGuard<'_>> = None;
    if mm.cfg.uffd_private {
        pml = Some(mm.lock_pml());
        mm.ev("collapse", "uffd private: pmd_lock before step 2");
    }
    // pte_offset_map_rw_nolock()
    let Some(t) = mm.pmd_table() else {
        return mm.abort(0, "pte_offset_map_rw_nolock: no table");
    };
    let pgt_pmd = t;
    let mut ptl: Option<SpinGuard<'_>> = None;
    let pml_held = pml.is_some();
    if !pml_held || mm.split() {
        ptl = Some(mm.ptl(t).lock());
    }
    if mm.pmd_table() != Some(pgt_pmd) {
        return mm.abort(0, "pmd_same failed before step 2");
    }
    let mut nr = 0;
    if let Err(why) = mm.step2(t, &mut nr) {
        return mm.abort(nr, why);
    }
    if !pml_held {
        mm.ev("collapse", "spin_unlock(ptl) after step 2");
        drop(ptl.take());
    }
    mm.account(nr);
    if !pml_held {
        pml = Some(mm.lock_pml());
        if mm.split() {
            ptl = Some(mm.ptl(t).lock());
        }
        // 7.3 rechecks only inside `if (ptl != pml)`; Fix A always.
        if (mm.split() || fixes.recheck_always) && mm.pmd_table() != Some(pgt_pmd) {
            return mm.abort_owed_flush(ABORT_STEP4_PMD_CHANGED);
        }
        if fixes.rescan {
            if !mm.all_none(t) {
                mm.ev("collapse", "step 4 rescan: a slot is no longer pte_none");
                return mm.abort_owed_flush(ABORT_STEP4_RESCAN);
            }
            mm.ev("collapse", "step 4 rescan: all slots pte_none");
        }
    }
    mm.ev("collapse", "step 4: pml + ptl held");
    let r = mm.remove_table(t);
    drop(ptl);
    drop(pml);
    r
}

/// (d) ours.
fn collapse_ours(mm: &Mm, _t1: usize) -> Outcome {
    collapse_ours_impl(mm, true)
}

fn collapse_ours_impl(mm: &Mm, skip_same_lock: bool) -> Outcome {
    let Some(t) = mm.pmd_table() else {
        return mm.abort(0, "pte_offset_map_rw_nolock: no table");
    };
    let pgt_pmd = t;
    let mut ptl = Some(mm.ptl(t).lock());
    if mm.pmd_table() != Some(pgt_pmd) {
        return mm.abort(0, "pmd_same failed before step 2");
    }
    // Cumulative over passes: never reset, so the abort path's flush and the
    // step-3 accounting always cover every PTE cleared by any pass.
    let mut nr = 0;
    let mut pml: Option<SpinGuard<'_>> = None;
    loop {
        if let Err(why) = mm.step2(t, &mut nr) {
            return mm.abort(nr, why);
        }
        if pml.is_some() || (skip_same_lock && !mm.split()) {
            break; // both held; with ptl == pml, ptl *is* pml
        }
        let (g, relocked) = mm.trylock_pml_or_relock(t, &mut ptl);
        pml = Some(g);
        if !relocked {
            break;
        }
        if mm.pmd_table() != Some(pgt_pmd) {
            return mm.abort(nr, "pmd_same failed after relock");
        }
        mm.ev("collapse", "rescan step 2 with both locks (cumulative count)");
    }
    mm.account(nr);
    mm.ev("collapse", "step 4: pml + ptl held");
    let r = mm.remove_table(t);
    drop(ptl);
    drop(pml);
    r
}

/// Negative control: block on pml while holding ptl.
fn collapse_naive_nested(mm: &Mm, _t1: usize) -> Outcome {
    let Some(t) = mm.pmd_table() else {
        return mm.abort(0, "no table");
    };
    let _ptl = mm.ptl(t).lock();
    if mm.pmd_table() != Some(t) {
        return mm.abort(0, "pmd_same failed before step 2");
    }
    let mut nr = 0;
    if let Err(why) = mm.step2(t, &mut nr) {
        return mm.abort(nr, why);
    }
    mm.ev("collapse", "holding ptl, spin_lock(pml) (blocking)");
    let _pml = if mm.split() { Some(mm.lock_pml()) } else { None };
    mm.account(nr);
    mm.remove_table(t)
}

/// `try_collapse_pte_mapped_thp()` (install_pmd = false) under the chosen
/// protocol.  The folio lock and mmap read lock are implicit: no modelled
/// actor needs them.
pub fn collapse(mm: &Mm) -> Outcome {
    // find_pmd_or_thp_or_none(): SCAN_NO_PTE_TABLE -> maybe_install_pmd.
    if mm.pmd_table().is_none() {
        return Outcome::NoTable;
    }
    let t1 = match mm.step1() {
        Ok(t) => t,
        Err(o) => return o,
    };
    mm.ev("collapse", "spin_unlock(ptl) after step 1; mmu_notifier start");
    match mm.cfg.protocol {
        Protocol::PreFix2023 => collapse_prefix_2023(mm, t1),
        Protocol::HughV2 => collapse_hugh_v2(mm, t1),
        Protocol::Upstream73 => collapse_c73(
            mm,
            C73Fixes {
                recheck_always: false,
                rescan: false,
            },
        ),
        Protocol::Ours => collapse_ours(mm, t1),
        Protocol::NaiveNested => collapse_naive_nested(mm, t1),
        Protocol::OursNoSameLockSkip => collapse_ours_impl(mm, false),
        Protocol::FixedC73 => collapse_c73(
            mm,
            C73Fixes {
                recheck_always: true,
                rescan: true,
            },
        ),
        Protocol::C73FixAOnly => collapse_c73(
            mm,
            C73Fixes {
                recheck_always: true,
                rescan: false,
            },
        ),
        Protocol::C73FixBOnly => collapse_c73(
            mm,
            C73Fixes {
                recheck_always: false,
                rescan: true,
            },
        ),
    }
}

// ---- the other actors ----------------------------------------------------------

/// What every installer does: if the pmd is none, `__pte_alloc()` a table
/// (only if [`Config::realloc`]; otherwise the model has no table to give and
/// the attempt ends), then `pte_offset_map_lock()` and, iff the slot is
/// `pte_none`, `set_pte_at(pte)`.  A populated slot ends the attempt
/// (-EEXIST, or zap + retry for guard install: the model gives up).
fn install_if_none(mm: &Mm, who: &str, slot: usize, pte: Pte, what: &str) {
    if mm.pmd_table().is_none() {
        if !mm.cfg.realloc {
            return;
        }
        mm.pte_alloc(who);
    }
    let Some((t, _g)) = mm.map_lock() else { return }; // -EAGAIN
    if mm.get(t, slot) == Pte::None {
        mm.set(t, slot, pte);
        mm.ev(who, format!("install {what} in slot {slot} of table {t}"));
    }
}

/// UFFDIO_COPY on a MAP_PRIVATE VMA: `mfill_establish_pmd()` (may
/// `__pte_alloc()`), then `mfill_atomic_pte_copy()` ->
/// `mfill_atomic_install_pte()`: pte_offset_map_lock, -EEXIST unless
/// pte_none, set_pte_at(anon).  Never looks at the page cache / folio lock.
pub fn uffd_copy(mm: &Mm, slot: usize) {
    install_if_none(mm, "uffd", slot, Pte::Anon, "anon PTE");
}

/// UFFDIO_POISON on any uffd-registered non-hugetlb VMA (MAP_SHARED shmem
/// included): `mfill_establish_pmd()` (may `__pte_alloc()`), then
/// `mfill_atomic_pte_poison()`: pte_offset_map_lock, -EEXIST unless
/// pte_none, set_pte_at(PTE_MARKER_POISONED).  No page cache, no folio lock.
pub fn uffd_poison(mm: &Mm, slot: usize) {
    install_if_none(mm, "uffd_poison", slot, Pte::Poison, "poison marker");
}

/// MADV_GUARD_INSTALL: `madvise_guard_install()` -> page walk
/// (`walk_pmd_range()` allocates a table if needed, `walk_pte_range()` takes
/// ptl via pte_offset_map_lock, `guard_install_set_pte()` on pte_none).
pub fn guard_install(mm: &Mm, slot: usize) {
    install_if_none(mm, "guard", slot, Pte::Guard, "guard marker");
}

/// MADV_DONTNEED with CONFIG_PT_RECLAIM: `zap_pte_range()` then
/// `zap_empty_pte_table()` (trylock pml under ptl) or, on failure,
/// `zap_pte_table_if_empty()` (pml, ptl nested, rescan).  Only the freeing of
/// an already-empty table is modelled (see README).
pub fn pt_reclaim(mm: &Mm) {
    {
        let Some((t, _ptl)) = mm.map_lock() else {
            return;
        };
        if !mm.all_none(t) {
            return; // can_reclaim_pt false / table not empty
        }
        if !mm.split() {
            mm.free_table("pt_reclaim(direct)", t);
            return;
        }
        if let Some(_pml) = mm.pml.try_lock() {
            mm.free_table("pt_reclaim(direct)", t);
            return;
        }
        mm.ev("pt_reclaim", "table empty but spin_trylock(pml) failed: drop ptl");
    }
    // zap_pte_table_if_empty()
    let _pml = mm.lock_pml();
    let Some(t) = mm.pmd_table() else { return };
    mm.ev(
        "pt_reclaim",
        format!("zap_pte_table_if_empty: pml held, spin_lock_nested(ptl of table {t})"),
    );
    let _ptl = if mm.split() { Some(mm.ptl(t).lock()) } else { None };
    if !mm.all_none(t) {
        return;
    }
    mm.free_table("pt_reclaim(slow)", t);
}

/// Another pmd_lock() user of the same PMD page.
pub fn pml_holder(mm: &Mm) {
    let _g = mm.lock_pml();
    mm.ev("pml_holder", "holds pml");
}

fn run_actor(mm: &Mm, a: Actor) {
    match a {
        Actor::UffdCopy { slot } => uffd_copy(mm, slot),
        Actor::GuardInstall { slot } => guard_install(mm, slot),
        Actor::UffdPoison { slot } => uffd_poison(mm, slot),
        Actor::PtReclaim => pt_reclaim(mm),
        Actor::PmlHolder => pml_holder(mm),
    }
}

// ---- final checks -------------------------------------------------------------

impl Mm {
    /// Run after every thread joined.
    fn final_check(&self) {
        let outcome = self.view(|v| v.outcome);
        let live = self.pmd_table();
        let live_slots: [Pte; NSLOTS] = match live {
            Some(t) => self.tables[t].st.with(|p| unsafe { (*p).slots }),
            None => [Pte::None; NSLOTS],
        };
        // TLB: a cached translation of table 0 slot i (File(i)) must still be
        // backed by the same PTE in the live table 0; otherwise the flush owed
        // for clearing it was lost.
        let tlb = self.view(|v| v.tlb);
        for i in 0..NSLOTS {
            if tlb[i] && !(live == Some(0) && live_slots[i] == Pte::File(i)) {
                self.violation(
                    INV_LOST_FLUSH,
                    format!(
                        "collapse returned {outcome:?}; another CPU still caches File({i}) \
                         for slot {i} but pmd -> {live:?}, slot = {:?}",
                        live_slots[i]
                    ),
                );
            }
        }
        // Accounting: refs held for File PTEs == File PTEs still mapped.
        let refs = self.view(|v| v.file_refs);
        let mapped = live_slots.iter().filter(|p| matches!(p, Pte::File(_))).count();
        if refs != mapped {
            self.violation(INV_ACCOUNTING, format!("refs {refs} but {mapped} File PTEs mapped"));
        }
        // Clean outcome: success <=> table 0 is gone; abort keeps table 0
        // unless someone else (PT_RECLAIM) legitimately freed it.
        match outcome {
            Some(Outcome::Succeeded) => {
                let freed0 = self.tables[0].st.with(|p| unsafe { (*p).freed });
                if !freed0 {
                    self.violation(INV_UNCLEAN, "success but table 0 not freed");
                }
            }
            Some(_) => {}
            None => self.violation(INV_UNCLEAN, "collapse did not return"),
        }
    }
}

/// One loom execution body: spawn the actors, run collapse on the main
/// thread, join, check.  Panics (with an `INV_*` message and the trace) if a
/// violation was recorded.
pub fn execution(cfg: &Config) -> ExecSummary {
    assert!(cfg.actors.len() < loom::MAX_THREADS, "too many actors for loom");
    CUR_TRACE.with(|t| t.borrow_mut().clear());
    let mm = Arc::new(Mm::new(cfg.clone()));
    let handles: Vec<_> = cfg
        .actors
        .iter()
        .map(|&a| {
            let mm = mm.clone();
            thread::spawn(move || run_actor(&mm, a))
        })
        .collect();
    let o = collapse(&mm);
    mm.ev("collapse", format!("returns {o:?}"));
    mm.view(|v| v.outcome = Some(o));
    for h in handles {
        h.join().unwrap();
    }
    mm.final_check();
    let v = mm.violations.lock().unwrap().clone();
    let trace = mm.trace.lock().unwrap().clone();
    if !v.is_empty() {
        panic!(
            "{}\ncounterexample ({:?}, split_ptlocks={}, uffd_private={}):\n  {}",
            v.join("\n"),
            cfg.protocol,
            cfg.split_ptlocks,
            cfg.uffd_private,
            trace.join("\n  ")
        );
    }
    ExecSummary {
        outcome: o,
        trylock_failed: trace.iter().any(|e| e.contains("spin_trylock(pml) failed")),
        table_reclaimed: trace.iter().any(|e| e.starts_with("pt_reclaim")),
        table_reallocated: trace.iter().any(|e| e.contains("__pte_alloc")),
        rescan_abort: matches!(o, Outcome::Aborted(_)) && trace.iter().any(|e| e.contains("spin_trylock(pml) failed")),
    }
}

/// What one (violation-free) execution did, for coverage assertions.
#[derive(Clone, Copy, Debug)]
pub struct ExecSummary {
    pub outcome: Outcome,
    pub trylock_failed: bool,
    pub table_reclaimed: bool,
    /// an installer `__pte_alloc()`ed a new table (after a reclaim)
    pub table_reallocated: bool,
    /// collapse aborted after its spin_trylock(pml) failed (i.e. on the
    /// relock + pmd_same + rescan path)
    pub rescan_abort: bool,
}

/// Coverage over all explored executions.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub executions: usize,
    pub outcomes: std::collections::BTreeSet<String>,
    pub trylock_failed: usize,
    pub table_reclaimed: usize,
    pub table_reallocated: usize,
    pub rescan_abort: usize,
}

impl Stats {
    pub fn saw_success(&self) -> bool {
        self.outcomes.contains("Succeeded")
    }
    pub fn saw_abort(&self) -> bool {
        self.outcomes.iter().any(|o| o.starts_with("Aborted"))
    }
    /// Some execution ended in `Outcome::Aborted(why)`.
    pub fn saw_abort_because(&self, why: &str) -> bool {
        self.outcomes.contains(&format!("Aborted({why})"))
    }
}

/// Default preemption bound (overridable with LOOM_MAX_PREEMPTIONS).
pub const DEFAULT_PREEMPTION_BOUND: usize = 2;

pub fn builder() -> loom::model::Builder {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(DEFAULT_PREEMPTION_BOUND);
    }
    b
}

/// Explore every interleaving (within the preemption bound); panics on the
/// first violating one; returns coverage statistics otherwise.
pub fn check(cfg: Config) -> Stats {
    let stats = Arc::new(std::sync::Mutex::new(Stats::default()));
    let st = stats.clone();
    let mut b = builder();
    if let Some(n) = cfg.min_preemptions {
        b.preemption_bound = Some(b.preemption_bound.map_or(n, |p| p.max(n)));
    }
    b.check(move || {
        let s = execution(&cfg);
        let mut g = st.lock().unwrap();
        g.executions += 1;
        g.outcomes.insert(match s.outcome {
            Outcome::Aborted(why) => format!("Aborted({why})"),
            o => format!("{o:?}"),
        });
        g.trylock_failed += s.trylock_failed as usize;
        g.table_reclaimed += s.table_reclaimed as usize;
        g.table_reallocated += s.table_reallocated as usize;
        g.rescan_abort += s.rescan_abort as usize;
    });
    let r = stats.lock().unwrap().clone();
    r
}

/// Like [`check`] but returns the first violation's message (with the
/// counterexample trace) as `Err` instead of panicking.
pub fn explore(cfg: Config) -> Result<Stats, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(cfg))) {
        Ok(s) => Ok(s),
        Err(e) => Err(panic_message(e)),
    }
}

/// Explore, and return the panic message of the first violating interleaving
/// (None if every explored interleaving is fine).
pub fn find_violation(cfg: Config) -> Option<String> {
    explore(cfg).err()
}

fn panic_message(e: Box<dyn std::any::Any + Send>) -> String {
    let mut m = if let Some(s) = e.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = e.downcast_ref::<&str>() {
        s.to_string()
    } else {
        "<non-string panic>".to_string()
    };
    if !m.contains("counterexample") {
        // Torn down by loom itself (e.g. deadlock): show our trace too.
        let t = CUR_TRACE.with(|t| t.borrow().join("\n  "));
        m.push_str("\ntrace of the failing execution:\n  ");
        m.push_str(&t);
    }
    m
}
