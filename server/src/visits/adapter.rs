//! The visits producer: the one writer of the visits database and the owner of the `Stop/*`,
//! `Visits/*` and `Visits/Survey/*` tags.
//!
//! HTTP, MQTT and OPC UA hand it records through a queue. It takes whatever is waiting at once,
//! writes it in one transaction (group commit: one fsync for many answers), recomputes the
//! figures from the rows, publishes them, and only then answers each sender. So a record
//! acknowledged anywhere is durable, and the bus never shows a figure the database would not.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fabrique_adapters::{
    Adapter, AdapterContext, CallError, CallRequest, CatalogError, Command, DataType, Publisher,
    TagId, TagRegistrar, TagSpec, Timestamp, Value, WriteError,
};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use super::records::{day_of, Audience, CheckIn, Rejection, Stop};
use super::store::{Figures, Scope, Store, StoreError, SurveyFigures, Write};
use super::tour::{self, PlannedStop};
use crate::storage::OffThread;

/// Records waiting for the writer; a full queue makes senders wait (HTTP clients, the MQTT
/// subscriber), which is the back-pressure we want.
const QUEUE: usize = 4096;
/// Most records written in one transaction.
const MAX_BATCH: usize = 1024;
/// How often the figures of the day are refreshed without new records (a new day starts).
const REFRESH: Duration = Duration::from_secs(30);

/// A record or a stop on its way to the writer, with where to send the outcome.
pub struct Request {
    pub write: Pending,
    pub reply: oneshot::Sender<Result<Stored, StoreFailed>>,
}

/// What the writer still has to complete: the stop of a record is the current stop unless the
/// record names one.
#[derive(Debug, Clone)]
pub enum Pending {
    Visit(CheckIn, &'static str),
    Survey(super::records::SurveyResponse, &'static str),
    SetStop(Stop),
    /// `[stop]` of a reloaded configuration (reload.rs).
    Configure(Stop),
}

/// A record stored: its row id and the stop it was filed under.
#[derive(Debug, Clone)]
pub struct Stored {
    pub id: i64,
    pub stop: String,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct StoreFailed(pub String);

/// What the HTTP and MQTT entry points share with the writer.
pub struct Shared {
    pub current_stop: Mutex<Stop>,
    pub survey_rejected: AtomicU64,
    pub visits_rejected: AtomicU64,
    /// Ids of the trades catalogue: what the survey's trades question accepts.
    pub trades: Vec<String>,
    /// The tour calendar.
    pub tour: Vec<PlannedStop>,
    /// Kinds of rejection already logged, per entry point: one warning each, not per message.
    logged: Mutex<std::collections::HashSet<(&'static str, &'static str)>>,
}

impl Shared {
    /// Count a refused input and log it the first time its kind shows up on `source`.
    pub fn rejected(&self, source: &'static str, survey: bool, rejection: &Rejection) {
        let counter = if survey {
            &self.survey_rejected
        } else {
            &self.visits_rejected
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if self.logged.lock().insert((source, rejection.kind.as_str())) {
            tracing::warn!(
                source,
                kind = rejection.kind.as_str(),
                reason = %rejection.reason,
                "invalid {} refused (further ones of this kind are counted, not logged)",
                if survey { "survey response" } else { "check-in" }
            );
        }
    }
}

/// The entry points' handle on the writer; cheap to clone.
#[derive(Clone)]
pub struct VisitsHandle {
    pub shared: Arc<Shared>,
    queue: mpsc::Sender<Request>,
    /// Opened by [`VisitsHandle::open`] before the gateway is ready, taken by the writer.
    store: Arc<Mutex<Option<Store>>>,
}

impl VisitsHandle {
    /// Open the database and settle the current stop; called once at start.
    pub fn open(
        &self,
        storage: &crate::storage::StorageConfig,
        configured: &Stop,
    ) -> Result<Stop, StoreError> {
        let (mut store, current) = Store::open(storage, configured)?;
        store.plan(&self.shared.tour)?;
        *self.store.lock() = Some(store);
        *self.shared.current_stop.lock() = current.clone();
        Ok(current)
    }

    /// Hand a record to the writer and wait until it is durable (or failed).
    pub async fn submit(&self, write: Pending) -> Result<Stored, StoreFailed> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Request { write, reply })
            .await
            .map_err(|_| StoreFailed("the visits writer is not running".into()))?;
        answer
            .await
            .unwrap_or_else(|_| Err(StoreFailed("the visits writer stopped".into())))
    }

    /// Make `[stop]` of a reloaded configuration the current stop, durably.
    pub async fn configure_stop(&self, stop: Stop) -> Result<Stored, StoreFailed> {
        self.submit(Pending::Configure(stop)).await
    }

    pub fn current_stop(&self) -> Stop {
        self.shared.current_stop.lock().clone()
    }
}

/// Tags of one set of survey figures.
struct SurveyTags {
    responses: TagId,
    satisfied_pct: TagId,
    view_changed_pct: TagId,
}

impl SurveyTags {
    fn declare(
        tags: &mut TagRegistrar<'_>,
        parent: &str,
        suffix: &str,
        what: &str,
    ) -> Result<Self, CatalogError> {
        Ok(SurveyTags {
            responses: tags.register(
                TagSpec::new(format!("{parent}/Responses{suffix}"), DataType::UInt64)
                    .describe(&format!("Survey responses {what}")),
            )?,
            satisfied_pct: tags.register(percent(
                &format!("{parent}/SatisfiedPct{suffix}"),
                &format!("Share of responses {what} satisfied or very satisfied (0 without responses)"),
            ))?,
            view_changed_pct: tags.register(percent(
                &format!("{parent}/ViewChangedPct{suffix}"),
                &format!("Share of responses {what} whose view of industrial jobs changed (0 without responses)"),
            ))?,
        })
    }

    fn publish(&self, out: &mut Publisher, figures: &SurveyFigures, now: Timestamp) {
        out.set(self.responses, Value::UInt(figures.responses), now);
        out.set(self.satisfied_pct, Value::Float(figures.satisfied_pct), now);
        out.set(
            self.view_changed_pct,
            Value::Float(figures.view_changed_pct),
            now,
        );
    }
}

fn percent(path: &str, text: &str) -> TagSpec {
    TagSpec::new(path, DataType::Float64)
        .unit("%")
        .range(0.0, 100.0)
        .describe(text)
}

fn counter(tags: &mut TagRegistrar<'_>, path: &str, text: &str) -> Result<TagId, CatalogError> {
    tags.register(TagSpec::new(path, DataType::UInt64).describe(text))
}

struct Tags {
    stop: [TagId; 4],
    /// The current stop's identity (`stops` table) and kind.
    stop_id: TagId,
    stop_kind: TagId,
    visitors_total: TagId,
    visitors_at_stop: TagId,
    visitors_today: TagId,
    groups_total: TagId,
    groups_at_stop: TagId,
    groups_today: TagId,
    visits_rejected: TagId,
    /// Per audience: visitors in total and at this stop.
    audience_visitors: Vec<(Audience, TagId, TagId)>,
    survey_total: SurveyTags,
    survey_satisfied: TagId,
    survey_view_changed: TagId,
    survey_at_stop: SurveyTags,
    survey_today: SurveyTags,
    survey_rejected: TagId,
    /// Per audience: in total and at this stop.
    audience_survey: Vec<(Audience, SurveyTags, SurveyTags)>,
    /// Per trade of the catalogue: answers that chose it, all stops.
    trades: Vec<(String, TagId)>,
}

impl Tags {
    fn declare(tags: &mut TagRegistrar<'_>, trade_ids: &[String]) -> Result<Self, CatalogError> {
        let trades = trade_ids
            .iter()
            .map(|id| {
                Ok((
                    id.clone(),
                    counter(
                        tags,
                        &format!("Visits/Survey/Trades/{id}"),
                        "Survey answers that chose this trade (\"Quels métiers vous ont donné envie d'en savoir plus ?\"), all stops",
                    )?,
                ))
            })
            .collect::<Result<_, CatalogError>>()?;
        let stop_tag = |tags: &mut TagRegistrar<'_>, name: &str, text: &str| {
            tags.register(TagSpec::new(format!("Stop/{name}"), DataType::String).describe(text))
        };
        let stop = [
            stop_tag(tags, "Town", "Town of the current stop")?,
            stop_tag(tags, "Venue", "Venue where the truck is parked")?,
            stop_tag(tags, "FirstDay", "First day of the stop, YYYY-MM-DD")?,
            stop_tag(tags, "LastDay", "Last day of the stop, YYYY-MM-DD")?,
        ];
        let mut audience_visitors = Vec::new();
        for a in Audience::ALL {
            let base = format!("Visits/Audiences/{}", a.browse_name());
            audience_visitors.push((
                a,
                counter(
                    tags,
                    &format!("{base}/Visitors"),
                    "Visitors of this audience, all stops",
                )?,
                counter(
                    tags,
                    &format!("{base}/VisitorsAtStop"),
                    "Visitors of this audience at the current stop",
                )?,
            ));
        }
        let mut audience_survey = Vec::new();
        for a in Audience::ALL {
            let base = format!("Visits/Survey/Audiences/{}", a.browse_name());
            audience_survey.push((
                a,
                SurveyTags::declare(tags, &base, "", "of this audience, all stops,")?,
                SurveyTags::declare(
                    tags,
                    &base,
                    "AtStop",
                    "of this audience at the current stop,",
                )?,
            ));
        }
        Ok(Tags {
            stop,
            stop_id: tags
                .register(TagSpec::new("Stop/Id", DataType::UInt64).describe(
                    "Identity of the current stop: a town visited again is a new stop",
                ))?,
            stop_kind: stop_tag(
                tags,
                "Kind",
                "school, event or company (from the tour calendar), empty when unknown",
            )?,
            visitors_total: counter(
                tags,
                "Visits/VisitorsTotal",
                "Visitors checked in, all stops",
            )?,
            visitors_at_stop: counter(
                tags,
                "Visits/VisitorsAtStop",
                "Visitors checked in at the current stop",
            )?,
            visitors_today: counter(
                tags,
                "Visits/VisitorsToday",
                "Visitors checked in today (the gateway's local day)",
            )?,
            groups_total: counter(tags, "Visits/GroupsTotal", "Groups checked in, all stops")?,
            groups_at_stop: counter(
                tags,
                "Visits/GroupsAtStop",
                "Groups checked in at the current stop",
            )?,
            groups_today: counter(
                tags,
                "Visits/GroupsToday",
                "Groups checked in today (the gateway's local day)",
            )?,
            visits_rejected: counter(
                tags,
                "Visits/Rejected",
                "Invalid check-ins refused since start",
            )?,
            audience_visitors,
            survey_total: SurveyTags::declare(tags, "Visits/Survey", "", "of all stops")?,
            survey_satisfied: counter(
                tags,
                "Visits/Survey/Satisfied",
                "Responses satisfied or very satisfied, all stops",
            )?,
            survey_view_changed: counter(
                tags,
                "Visits/Survey/ViewChanged",
                "Responses whose view changed, all stops",
            )?,
            survey_at_stop: SurveyTags::declare(
                tags,
                "Visits/Survey",
                "AtStop",
                "at the current stop",
            )?,
            survey_today: SurveyTags::declare(
                tags,
                "Visits/Survey",
                "Today",
                "of today (the gateway's local day)",
            )?,
            survey_rejected: counter(
                tags,
                "Visits/Survey/Rejected",
                "Invalid survey responses refused since start",
            )?,
            audience_survey,
            trades,
        })
    }
}

/// Figures published on the bus: all stops, the current stop, today.
struct BusFigures {
    /// The current stop as the database knows it (id, kind).
    stop: Option<super::store::StopRecord>,
    /// Answers per trade, all stops.
    trades: std::collections::BTreeMap<String, u64>,
    total: Figures,
    at_stop: Figures,
    today: Figures,
}

/// The scope of the current stop: its identity (a town the truck visited before keeps its own
/// figures), or its town for a stop without an id yet.
pub fn current_scope<'a>(store: &Store, stop: &'a Stop) -> Result<Scope<'a>, StoreError> {
    Ok(match store.stop_id(stop)? {
        Some(id) => Scope {
            stop_id: Some(id),
            ..Scope::default()
        },
        None => Scope {
            stop: Some(&stop.town),
            ..Scope::default()
        },
    })
}

fn bus_figures(store: &Store, stop: &Stop) -> Result<BusFigures, StoreError> {
    let today = day_of(Timestamp::now());
    Ok(BusFigures {
        stop: store.stop_record(stop)?,
        trades: store
            .trades_grouped(Scope::default(), None)?
            .remove("")
            .unwrap_or_default(),
        total: store.figures(Scope::default())?,
        at_stop: store.figures(current_scope(store, stop)?)?,
        today: store.figures(Scope {
            day: Some(&today),
            ..Scope::default()
        })?,
    })
}

pub struct VisitsAdapter {
    tags: Option<Tags>,
    queue: Option<mpsc::Receiver<Request>>,
    handle: VisitsHandle,
}

impl VisitsAdapter {
    pub fn new(
        configured: Stop,
        trades: Vec<String>,
        tour: Vec<PlannedStop>,
    ) -> (Self, VisitsHandle) {
        let (queue, receiver) = mpsc::channel(QUEUE);
        let handle = VisitsHandle {
            shared: Arc::new(Shared {
                current_stop: Mutex::new(configured),
                survey_rejected: AtomicU64::new(0),
                visits_rejected: AtomicU64::new(0),
                trades,
                tour,
                logged: Mutex::default(),
            }),
            queue,
            store: Arc::default(),
        };
        let adapter = VisitsAdapter {
            tags: None,
            queue: Some(receiver),
            handle: handle.clone(),
        };
        (adapter, handle)
    }
}

/// The writer's state while running.
struct Writer {
    /// The planned stop the gateway last considered (town, first day): each is switched to at
    /// most once a run, so a stop the crew sets by hand during a planned one stays.
    tour_switched: Option<(String, String)>,
    store: OffThread<Store>,
    tags: Tags,
    shared: Arc<Shared>,
    rejected_published: (u64, u64),
}

impl Writer {
    fn publish_stop(&self, out: &mut Publisher, stop: &Stop, now: Timestamp) {
        let values = [&stop.town, &stop.venue, &stop.first_day, &stop.last_day];
        for (tag, value) in self.tags.stop.iter().zip(values) {
            out.set(*tag, Value::text(value), now);
        }
    }

    fn publish_figures(&self, out: &mut Publisher, f: &BusFigures, now: Timestamp) {
        let t = &self.tags;
        let visits = [
            (t.visitors_total, f.total.visits.visitors),
            (t.visitors_at_stop, f.at_stop.visits.visitors),
            (t.visitors_today, f.today.visits.visitors),
            (t.groups_total, f.total.visits.groups),
            (t.groups_at_stop, f.at_stop.visits.groups),
            (t.groups_today, f.today.visits.groups),
            (t.survey_satisfied, f.total.survey.satisfied),
            (t.survey_view_changed, f.total.survey.view_changed),
        ];
        for (tag, n) in visits {
            out.set(tag, Value::UInt(n), now);
        }
        for (audience, total, at_stop) in &t.audience_visitors {
            let of = |figures: &Figures| {
                figures
                    .visits_by_audience
                    .get(audience)
                    .copied()
                    .unwrap_or_default()
                    .visitors
            };
            out.set(*total, Value::UInt(of(&f.total)), now);
            out.set(*at_stop, Value::UInt(of(&f.at_stop)), now);
        }
        if let Some(stop) = &f.stop {
            out.set(t.stop_id, Value::UInt(stop.id.max(0) as u64), now);
            out.set(t.stop_kind, Value::text(&stop.kind), now);
        }
        for (id, tag) in &t.trades {
            let n = f.trades.get(id).copied().unwrap_or(0);
            out.set(*tag, Value::UInt(n), now);
        }
        t.survey_total.publish(out, &f.total.survey, now);
        t.survey_at_stop.publish(out, &f.at_stop.survey, now);
        t.survey_today.publish(out, &f.today.survey, now);
        for (audience, total, at_stop) in &t.audience_survey {
            let of = |figures: &Figures| {
                figures
                    .survey_by_audience
                    .get(audience)
                    .copied()
                    .unwrap_or_default()
            };
            total.publish(out, &of(&f.total), now);
            at_stop.publish(out, &of(&f.at_stop), now);
        }
    }

    /// Publish the refusal counters if they moved.
    fn publish_rejected(&mut self, out: &mut Publisher, now: Timestamp) -> bool {
        let current = (
            self.shared.survey_rejected.load(Ordering::Relaxed),
            self.shared.visits_rejected.load(Ordering::Relaxed),
        );
        if current == self.rejected_published {
            return false;
        }
        self.rejected_published = current;
        out.set(self.tags.survey_rejected, Value::UInt(current.0), now);
        out.set(self.tags.visits_rejected, Value::UInt(current.1), now);
        true
    }

    /// Recompute the figures for the current stop and publish them.
    async fn refresh(&self, out: &mut Publisher) {
        let stop = self.shared.current_stop.lock().clone();
        let computed = self.store.run(move |store| bus_figures(store, &stop)).await;
        match computed {
            Ok(Ok(figures)) => self.publish_figures(out, &figures, Timestamp::now()),
            Ok(Err(error)) => tracing::error!(%error, "cannot compute the visit figures"),
            Err(error) => tracing::error!(%error, "visit figures task failed"),
        }
    }

    /// On a planned stop's days, make it the current stop (once per planned stop).
    async fn follow_tour(&mut self, out: &mut Publisher) {
        let today = day_of(Timestamp::now());
        let Some(planned) = tour::due(&self.shared.tour, &today).cloned() else {
            return;
        };
        let key = (planned.town.clone(), planned.first_day.clone());
        if self.tour_switched.as_ref() == Some(&key) {
            return;
        }
        self.tour_switched = Some(key);
        let stop = planned.stop();
        let current = self.shared.current_stop.lock().clone();
        // A current stop starting on or after the planned one was set on purpose (the crew, or
        // this switch before a restart): it stays.
        if current == stop || current.first_day >= planned.first_day {
            return;
        }
        tracing::info!(town = %stop.town, first_day = %stop.first_day, kind = planned.kind.as_str(), "tour: the next stop starts today");
        let (reply, _answer) = oneshot::channel();
        self.write_batch(
            out,
            vec![Request {
                write: Pending::SetStop(stop),
                reply,
            }],
        )
        .await;
    }

    /// Write a batch in one transaction, publish, then answer every sender.
    async fn write_batch(&mut self, out: &mut Publisher, batch: Vec<Request>) {
        let mut stop = self.shared.current_stop.lock().clone();
        let mut writes = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        for request in batch {
            let (write, filed_under) = match request.write {
                Pending::Visit(visit, source) => {
                    let town = visit.stop.clone().unwrap_or_else(|| stop.town.clone());
                    (
                        Write::Visit {
                            visit,
                            stop: town.clone(),
                            source,
                        },
                        town,
                    )
                }
                Pending::Survey(response, source) => {
                    let town = response.stop.clone().unwrap_or_else(|| stop.town.clone());
                    (
                        Write::Survey {
                            response,
                            stop: town.clone(),
                            source,
                        },
                        town,
                    )
                }
                Pending::SetStop(new) => {
                    stop = new.clone();
                    let town = new.town.clone();
                    (Write::SetStop(new), town)
                }
                Pending::Configure(new) => {
                    stop = new.clone();
                    let town = new.town.clone();
                    (Write::Configure(new), town)
                }
            };
            writes.push(write);
            replies.push((request.reply, filed_under));
        }
        let current = stop.clone();
        let outcome = self
            .store
            .run(move |store| {
                let ids = store.write(&writes)?;
                let figures = bus_figures(store, &current)?;
                Ok::<_, StoreError>((ids, figures))
            })
            .await
            .unwrap_or_else(|e| Err(StoreError::Task(e.to_string())));
        match outcome {
            Ok((ids, figures)) => {
                let now = Timestamp::now();
                let stop_changed = *self.shared.current_stop.lock() != stop;
                if stop_changed {
                    tracing::info!(town = %stop.town, venue = %stop.venue, first_day = %stop.first_day, last_day = %stop.last_day, "current stop set");
                    self.publish_stop(out, &stop, now);
                    *self.shared.current_stop.lock() = stop;
                }
                self.publish_figures(out, &figures, now);
                self.publish_rejected(out, now);
                out.flush();
                for ((reply, stop), id) in replies.into_iter().zip(ids) {
                    let _ = reply.send(Ok(Stored { id, stop }));
                }
            }
            Err(error) => {
                tracing::error!(%error, records = replies.len(), "cannot store visit records");
                let failed = StoreFailed(error.to_string());
                for (reply, _) in replies {
                    let _ = reply.send(Err(failed.clone()));
                }
            }
        }
    }

    /// An OPC UA method: `Stop/SetStop` or `Visits/CheckIn`.
    fn pending_for_call(request: &CallRequest) -> Result<Pending, CallError> {
        let texts: Vec<&str> = request
            .args
            .iter()
            .map(|a| match a {
                Value::Text(t) => t.as_ref(),
                _ => "",
            })
            .collect();
        let invalid = |r: Rejection| CallError::InvalidArgument(r.reason);
        match (request.method.as_str(), request.args.as_slice()) {
            ("Stop/SetStop", [Value::Text(_), Value::Text(_), Value::Text(_), Value::Text(_)]) => {
                let stop = Stop {
                    town: texts[0].to_owned(),
                    venue: texts[1].to_owned(),
                    first_day: texts[2].to_owned(),
                    last_day: texts[3].to_owned(),
                };
                stop.validate().map_err(invalid)?;
                Ok(Pending::SetStop(stop))
            }
            ("Stop/SetStop", _) => Err(CallError::InvalidArgument(
                "expects (Town, Venue, FirstDay, LastDay: String)".into(),
            )),
            ("Visits/CheckIn", [Value::Text(audience), size]) => {
                let size = match size {
                    Value::UInt(n) => *n,
                    Value::Int(n) => u64::try_from(*n).unwrap_or(0),
                    _ => {
                        return Err(CallError::InvalidArgument(
                            "Size must be an unsigned integer".into(),
                        ))
                    }
                };
                let visit = CheckIn::new(audience, size, None, None).map_err(invalid)?;
                Ok(Pending::Visit(visit, "opcua"))
            }
            ("Visits/CheckIn", _) => Err(CallError::InvalidArgument(
                "expects (Audience: String, Size: UInt32)".into(),
            )),
            (other, _) => Err(CallError::UnknownMethod(other.to_owned())),
        }
    }
}

/// The current stop with `SetStop`, the visits with `CheckIn`, and the survey.
fn declare_objects(tags: &mut TagRegistrar<'_>) -> Result<(), CatalogError> {
    use fabrique_adapters::{ArgumentSpec, FabriqueType, MethodSpec};
    tags.object("Stop", FabriqueType::Stop)?;
    tags.object("Visits", FabriqueType::Visits)?;
    tags.object("Visits/Survey", FabriqueType::Survey)?;
    let set_stop = MethodSpec::new(
        "Stop",
        "SetStop",
        "Set the current stop (dates YYYY-MM-DD, first <= last); kept across restarts",
    );
    let set_stop = ["Town", "Venue", "FirstDay", "LastDay"]
        .into_iter()
        .fold(set_stop, |m, name| m.input(ArgumentSpec::string(name)));
    tags.method(set_stop)?;
    tags.method(
        MethodSpec::new(
            "Visits",
            "CheckIn",
            "Check a group in: audience code (middle_school, high_school, student, job_seeker, retraining, teacher, company, general_public) and size",
        )
        .input(ArgumentSpec::string("Audience"))
        .input(ArgumentSpec::new("Size", DataType::UInt32)),
    )
}

#[async_trait]
impl Adapter for VisitsAdapter {
    fn name(&self) -> &str {
        "visits"
    }

    fn declare_tags(&mut self, tags: &mut TagRegistrar<'_>) -> Result<(), CatalogError> {
        declare_objects(tags)?;
        self.tags = Some(Tags::declare(tags, &self.handle.shared.trades)?);
        Ok(())
    }

    async fn run(self: Box<Self>, mut ctx: AdapterContext) {
        let VisitsAdapter {
            tags,
            queue,
            handle,
        } = *self;
        let (Some(tags), Some(mut queue)) = (tags, queue) else {
            return;
        };
        let Some(store) = handle.store.lock().take() else {
            tracing::error!("visits database not opened; visits and survey are off");
            return;
        };
        let mut writer = Writer {
            tour_switched: None,
            store: OffThread::new(store),
            tags,
            shared: handle.shared.clone(),
            rejected_published: (u64::MAX, u64::MAX),
        };
        let out = &mut ctx.publisher;
        let stop = writer.shared.current_stop.lock().clone();
        writer.publish_stop(out, &stop, Timestamp::now());
        writer.publish_rejected(out, Timestamp::now());
        // The stop is known now; the figures wait for the database. Sinks that are born
        // meanwhile (a Sparkplug NBIRTH) must already see the town.
        out.flush();
        writer.refresh(out).await;
        writer.follow_tour(out).await;
        out.flush();

        let mut refresh = tokio::time::interval(REFRESH);
        let mut rejected_tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = ctx.shutdown.cancelled() => break,
                Some(first) = queue.recv() => {
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match queue.try_recv() {
                            Ok(request) => batch.push(request),
                            Err(_) => break,
                        }
                    }
                    writer.write_batch(out, batch).await;
                }
                Some(command) = ctx.commands.recv() => match command {
                    Command::Write(w) => {
                        let _ = w.reply.send(Err(WriteError::NotWritable));
                    }
                    Command::Call(call) => match Writer::pending_for_call(&call) {
                        Err(error) => {
                            let _ = call.reply.send(Err(error));
                        }
                        Ok(pending) => {
                            // Through the queue, like HTTP: one writer, one order. The reply
                            // comes from a task, so the writer never waits for itself.
                            let handle = handle.clone();
                            tokio::spawn(async move {
                                let result = handle
                                    .submit(pending)
                                    .await
                                    .map(|_| Vec::new())
                                    .map_err(|e| CallError::Refused(e.0));
                                let _ = call.reply.send(result);
                            });
                        }
                    },
                },
                _ = refresh.tick() => {
                    writer.follow_tour(out).await;
                    writer.refresh(out).await;
                    out.flush();
                }
                _ = rejected_tick.tick() => {
                    if writer.publish_rejected(out, Timestamp::now()) {
                        out.flush();
                    }
                }
            }
        }
    }
}
