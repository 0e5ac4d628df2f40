//! Per-conversation knobs, and the cache of body templates built from them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::body_template::BodyTemplate;
use crate::document;
use crate::flags::Flags;
use crate::knobs::Knobs;

/// Past this many cached conversations the template cache starts over, so a
/// benchmark over millions of ids cannot grow it without bound.
const MAX_CACHED_CONVERSATIONS: usize = 10_000;

/// The knobs of one conversation at one moment.
#[derive(Debug, Clone)]
pub struct KnobsSnapshot {
    /// The knobs in force (the defaults when none were set).
    pub knobs: Arc<Knobs>,
    /// Which version of the store they come from.
    generation: u64,
}

#[derive(Debug)]
struct CachedTemplates {
    generation: u64,
    by_flags: [Option<Arc<BodyTemplate>>; Flags::COMBINATIONS],
}

#[derive(Debug, Default)]
struct Inner {
    knobs: HashMap<String, Arc<Knobs>>,
    /// Knobs that override every conversation's while set (an outage).
    outage: Option<Arc<Knobs>>,
    /// Bumped by every knob change; templates of older generations are stale.
    generation: u64,
    templates: HashMap<String, CachedTemplates>,
}

/// Knobs by conversation id, plus templates cached per (id, flags).
#[derive(Debug)]
pub struct ConversationStore {
    inner: Mutex<Inner>,
    default_knobs: Arc<Knobs>,
}

impl ConversationStore {
    /// An empty store: every conversation has the default knobs.
    pub fn new() -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            default_knobs: Arc::new(Knobs::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere cannot leave this map half-updated: keep serving.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The knobs in force for `id`: the outage's while there is one.
    pub fn knobs(&self, id: &str) -> KnobsSnapshot {
        let inner = self.lock();
        let knobs = match &inner.outage {
            Some(outage) => Arc::clone(outage),
            None => inner
                .knobs
                .get(id)
                .map_or_else(|| Arc::clone(&self.default_knobs), Arc::clone),
        };
        KnobsSnapshot {
            knobs,
            generation: inner.generation,
        }
    }

    /// Starts (`Some`) or ends (`None`) an outage: while it lasts, every
    /// conversation answers by these knobs.
    pub fn set_outage(&self, knobs: Option<Knobs>) {
        let mut inner = self.lock();
        inner.outage = knobs.map(Arc::new);
        inner.generation += 1;
    }

    /// Replaces the knobs of `id`.
    pub fn set(&self, id: &str, knobs: Knobs) {
        let mut inner = self.lock();
        inner.knobs.insert(id.to_owned(), Arc::new(knobs));
        inner.generation += 1;
    }

    /// Puts `id` back to the default knobs.
    pub fn clear(&self, id: &str) {
        let mut inner = self.lock();
        inner.knobs.remove(id);
        inner.generation += 1;
    }

    /// Puts every conversation back to the default knobs.
    pub fn clear_all(&self) {
        let mut inner = self.lock();
        inner.knobs.clear();
        inner.outage = None;
        inner.templates.clear();
        inner.generation += 1;
    }

    /// The body template of `id` with `flags` under `snapshot`'s knobs,
    /// built on first use (outside the lock) and cached until the knobs change.
    pub fn template(&self, id: &str, flags: Flags, snapshot: &KnobsSnapshot) -> Arc<BodyTemplate> {
        if let Some(template) = self.cached_template(id, flags, snapshot.generation) {
            return template;
        }
        let template = Arc::new(document::build_template(id, flags, &snapshot.knobs));
        let mut inner = self.lock();
        if inner.generation == snapshot.generation {
            if inner.templates.len() >= MAX_CACHED_CONVERSATIONS
                && !inner.templates.contains_key(id)
            {
                inner.templates.clear();
            }
            let cached = inner
                .templates
                .entry(id.to_owned())
                .or_insert_with(|| CachedTemplates {
                    generation: snapshot.generation,
                    by_flags: Default::default(),
                });
            if cached.generation != snapshot.generation {
                cached.generation = snapshot.generation;
                cached.by_flags = Default::default();
            }
            cached.by_flags[flags.index()] = Some(Arc::clone(&template));
        }
        template
    }

    fn cached_template(
        &self,
        id: &str,
        flags: Flags,
        generation: u64,
    ) -> Option<Arc<BodyTemplate>> {
        let inner = self.lock();
        let cached = inner.templates.get(id)?;
        if cached.generation != generation {
            return None;
        }
        cached.by_flags[flags.index()].clone()
    }
}
