//! The request path every Tokenizer and Admin call takes, whatever the transport:
//!
//! ```text
//! authenticate ─▶ shed load ─▶ validate ─▶ authorize ─▶ sealed? ─▶ vault (blocking thread,
//! under the deadline) ─▶ audit event (durable) ─▶ response
//! ```
//!
//! Every exit writes one audit event: an unauthenticated attempt (caller `unknown`), a shed
//! call, a denial, a failure, a success. The event is written and fsynced before the response
//! leaves, so a result the log does not show is never returned; if the log cannot take the
//! event the call fails with `UNAVAILABLE` and its result (plaintext included) is dropped here.
//!
//! It speaks domain types only: an [`Incoming`] call (credentials, source address, deadline,
//! end-user token) in, a result or a [`CallError`] out. A transport (`grpc/`, `connect/`) reads its wire
//! format into an `Incoming`, calls an rpc (`rpc/`), and maps the error with its own table.
//!
//! Deadlines (the client's timeout counted from the request's arrival, less
//! `limits.deadline_margin_ms` so the answer still reaches the client in time) are this path's
//! alone (the transport has no timer of its own, see `listen.rs`), and the event always
//! says what the caller is sent:
//! - past the deadline before the work starts: `DEADLINE_EXCEEDED`, no work done;
//! - past it during the work or before the event is written: `DEADLINE_EXCEEDED`, the result
//!   dropped (a tokenize may have stored its records: clients retry with idempotency keys);
//! - past it while the event was being written: the result is dropped, `DEADLINE_EXCEEDED` is
//!   sent, and a follow-up event with the same request id says so;
//! - the caller gone (stream reset, connection closed) while an event was being written: a
//!   follow-up event with outcome `unknown` says the recorded outcome may not have reached it.

pub(crate) mod error;
pub(crate) mod shared;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::OwnedSemaphorePermit;

pub(crate) use self::error::{CallError, Code};
pub(crate) use self::shared::Shared;
use crate::audit::{Event, Outcome};
use crate::auth::{self, Credentials, Identity};
use crate::callers::StoredScope;
use crate::policy::{AdminOp, Context, Grant, Operation, Registered, Scope};

/// Template recorded for a request naming a template that is not configured.
pub(crate) const UNKNOWN_TEMPLATE: &str = "(unknown)";
/// Caller name recorded for requests that did not authenticate.
pub(crate) const UNKNOWN_CALLER: &str = "unknown";

/// What the path needs of a call before its message, read by the transport from its wire.
pub(crate) struct Incoming {
    /// The client certificate chain and the bearer key, as presented.
    pub(crate) credentials: Credentials,
    /// The peer's address.
    pub(crate) source: Option<IpAddr>,
    /// When the client stops waiting: arrival plus its timeout.
    pub(crate) deadline: Option<Instant>,
    /// A forwarded end-user JWT (`x-end-user-token`).
    pub(crate) end_user_token: Option<String>,
    /// The protocol it came in (metrics only: every protocol takes the same path).
    pub(crate) protocol: Protocol,
    /// When its headers were read (latency metrics count from here).
    pub(crate) arrived: Instant,
}

/// The wire protocol of a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Protocol {
    /// gRPC over HTTP/2.
    Grpc,
    /// gRPC-Web (HTTP/1.1 or HTTP/2), translated by tonic-web.
    GrpcWeb,
    /// The Connect protocol, unary, JSON or binary.
    Connect,
    /// A request through a proxy route (`proxy/`).
    Proxy,
}

impl Protocol {
    /// The name in metrics.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::GrpcWeb => "grpc_web",
            Protocol::Connect => "connect",
            Protocol::Proxy => "proxy",
        }
    }
}

/// What a call whose message could not be read (a body that does not decode, a content type or
/// protocol version the transport refuses) is recorded as: its rpc's operation, with no
/// template and no items.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Unreadable {
    /// A Tokenizer rpc.
    Tokenizer(Operation),
    /// An Admin rpc.
    Admin(AdminOp),
}

/// What the audit event says about a call, filled in as the call goes.
pub(crate) struct Spec {
    pub(crate) operation: Operation,
    pub(crate) action: Option<&'static str>,
    pub(crate) template: Option<String>,
    pub(crate) items: u32,
    pub(crate) purpose: Option<String>,
    pub(crate) request_id: String,
    /// Set from the `Incoming` at admission.
    pub(crate) protocol: Protocol,
    /// Set from the `Incoming` at admission.
    pub(crate) arrived: Instant,
    /// A proxied request: `inbound:<route>/<rule>` or `outbound:<route>/<rule>`.
    pub(crate) route: Option<String>,
    /// A proxied outbound request: the caller that sent it.
    pub(crate) on_behalf_of: Option<String>,
}

impl Spec {
    pub(crate) fn tokenizer(
        operation: Operation,
        template: &str,
        items: usize,
        purpose: Option<&str>,
        request_id: Option<&str>,
    ) -> Spec {
        Spec {
            operation,
            action: None,
            template: Some(template.to_owned()),
            items: u32::try_from(items).unwrap_or(u32::MAX),
            purpose: purpose.filter(|p| !p.is_empty()).map(str::to_owned),
            request_id: request_id
                .filter(|r| !r.is_empty())
                .map_or_else(new_request_id, str::to_owned),
            protocol: Protocol::Grpc,
            arrived: Instant::now(),
            route: None,
            on_behalf_of: None,
        }
    }

    pub(crate) fn admin(action: &'static str) -> Spec {
        Spec {
            operation: Operation::Admin,
            action: Some(action),
            template: None,
            items: 1,
            purpose: None,
            request_id: new_request_id(),
            protocol: Protocol::Grpc,
            arrived: Instant::now(),
            route: None,
            on_behalf_of: None,
        }
    }
}

impl Spec {
    /// The rpc's name in metrics: the operation, or the admin action.
    fn rpc(&self) -> &'static str {
        self.action.unwrap_or(self.operation.as_str())
    }

    /// Count the call in the metrics, ended with `code`.
    fn observe(&self, shared: &Shared, code: Code) {
        shared.metrics.call(
            crate::metrics::CallLabels {
                rpc: self.rpc(),
                template: self.template.clone().unwrap_or_default(),
                protocol: self.protocol.name(),
                code: code.name(),
            },
            self.arrived.elapsed(),
        );
    }
}

fn new_request_id() -> String {
    let mut b = [0u8; 10];
    // A request id only correlates logs; a zero id if the RNG fails is harmless.
    let _ = getrandom::fill(&mut b);
    // Base32 (a–z, 2–7), not hex: 16 hex characters are all decimal digits about once in 1,800
    // ids, and a tenth of those pass the Luhn check, so log scanners (ours in
    // tests/canary.rs, and a PCI DLP tool) would flag them as card numbers.
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let bits = b.iter().fold(0u128, |acc, &x| (acc << 8) | u128::from(x));
    let id: String = (0..16)
        .map(|i| char::from(ALPHABET[((bits >> (75 - 5 * i)) & 31) as usize]))
        .collect();
    format!("req_{id}")
}

/// A call past authentication, load shedding and authorization.
pub(crate) struct Admitted {
    pub(crate) spec: Spec,
    pub(crate) identity: Identity,
    pub(crate) grant: Grant,
    /// When the server gives up: the client's deadline less the margin.
    give_up_at: Option<Instant>,
    /// Whether the call's event has been handed to the log (by `fail` or `finish`).
    recorded: AtomicBool,
    shared: Arc<Shared>,
    _permit: OwnedSemaphorePermit,
}

impl Admitted {
    /// Whether the call has run out of time.
    fn expired(&self) -> bool {
        self.give_up_at.is_some_and(|t| Instant::now() >= t)
    }
}

/// A call dropped before its event was written (the caller cancelled or went away, and hyper
/// dropped the call while its work ran) still leaves one event: `CANCELLED`, since nothing was
/// sent. Its work may have finished in the background (a tokenize's records stay, unreachable
/// without their tokens; a detokenize's values were dropped unsent).
impl Drop for Admitted {
    fn drop(&mut self) {
        if !self.recorded.swap(true, Ordering::SeqCst) {
            let mut e = self.shared.event(
                &self.spec,
                &self.identity.id,
                self.grant.subject(),
                Outcome::Failed {
                    code: Code::Cancelled.name().to_owned(),
                },
            );
            e.detail = Some("the caller went away before the call was answered".into());
            tracing::info!(request_id = %self.spec.request_id, "call cancelled by the caller");
            self.spec.observe(&self.shared, Code::Cancelled);
            drop(self.shared.audit.submit(e));
        }
    }
}

/// Until disarmed, stands for an event whose outcome may not reach the caller: if the call's
/// future is dropped while the event is being written (the client reset the stream or closed
/// the connection; hyper then drops the call), a follow-up event with the same request id and
/// outcome `unknown` is queued, so the log does not claim an answer nobody received.
struct Delivery<'a> {
    shared: &'a Shared,
    spec: &'a Spec,
    caller: &'a str,
    subject: Option<&'a str>,
    armed: bool,
}

impl Drop for Delivery<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut e = self.shared.event(
                self.spec,
                self.caller,
                self.subject,
                Outcome::Unknown {
                    reason: "the caller went away before the response was sent".into(),
                },
            );
            e.detail = Some(FOLLOW_UP.into());
            tracing::info!(request_id = %self.spec.request_id, "caller went away: outcome unknown");
            // Queued behind the event it follows; written by the writer thread either way.
            drop(self.shared.audit.submit(e));
        }
    }
}

/// The detail of an event that corrects the one before it.
const FOLLOW_UP: &str = "follows the event before with this request id";

/// What the handler adds to the final event.
#[derive(Default)]
pub(crate) struct Done {
    pub(crate) failed: u32,
    pub(crate) key_versions: Vec<u32>,
    pub(crate) token_refs: Vec<String>,
}

impl Shared {
    fn event(&self, spec: &Spec, caller: &str, subject: Option<&str>, outcome: Outcome) -> Event {
        let mut e = Event::new(caller, spec.operation, spec.request_id.clone(), outcome);
        e.action = spec.action.map(str::to_owned);
        e.template = spec.template.clone();
        e.items = spec.items;
        e.purpose = spec.purpose.clone();
        e.subject = subject.map(str::to_owned);
        e.route = spec.route.clone();
        e.on_behalf_of = spec.on_behalf_of.clone();
        e
    }

    /// Record an event for a call that ends with `status`; returns the status to send (or
    /// `UNAVAILABLE` if even the refusal cannot be recorded).
    async fn refuse(
        &self,
        spec: &Spec,
        caller: &str,
        subject: Option<&str>,
        s: CallError,
    ) -> CallError {
        let code = s.code();
        let outcome = match code {
            Code::Unauthenticated
            | Code::PermissionDenied
            | Code::ResourceExhausted
            | Code::FailedPrecondition => Outcome::Denied {
                reason: format!("{}: {}", code.name(), s.message()),
            },
            _ => Outcome::Failed {
                code: code.name().to_owned(),
            },
        };
        tracing::info!(
            caller,
            operation = %spec.operation,
            action = spec.action,
            template = spec.template.as_deref(),
            request_id = %spec.request_id,
            protocol = spec.protocol.name(),
            code = code.name(),
            "refused"
        );
        let event = self.event(spec, caller, subject, outcome);
        let sent = match self.record(spec, caller, subject, event).await {
            Ok(()) => s,
            Err(e) => e,
        };
        spec.observe(self, sent.code());
        sent
    }

    /// Write an event durably, with a [`Delivery`] guard over the wait.
    async fn record(
        &self,
        spec: &Spec,
        caller: &str,
        subject: Option<&str>,
        event: Event,
    ) -> Result<(), CallError> {
        let mut guard = Delivery {
            shared: self,
            spec,
            caller,
            subject,
            armed: true,
        };
        let written = self.audit.record_async(event).await;
        guard.armed = false;
        written.map(|_| ()).map_err(|e| error::audit(&e))
    }

    /// Authenticate, shed, authorize. `scope` is the scope the call needs; `validate` runs
    /// after authentication (so an anonymous caller learns nothing about request validity).
    pub(crate) async fn admit(
        self: &Arc<Self>,
        meta: &Incoming,
        spec: Spec,
        scope: Scope,
        validate: Result<(), CallError>,
        needs_unsealed: bool,
    ) -> Result<Admitted, CallError> {
        let mut spec = spec;
        spec.protocol = meta.protocol;
        spec.arrived = meta.arrived;
        // Only configured template names reach the audit log and the server log: a caller that
        // swapped fields may have put a card number in the template field.
        if let Some(t) = &spec.template
            && !self.vault.templates().any(|c| c.template.name() == t)
        {
            spec.template = Some(UNKNOWN_TEMPLATE.to_owned());
        }
        let identity = match auth::authenticate(&meta.credentials, &self.registry) {
            Ok(id) => id,
            Err(why) => {
                let s = CallError::Unauthenticated(why.to_string());
                return Err(self.refuse(&spec, UNKNOWN_CALLER, None, s).await);
            }
        };
        self.admit_as(
            meta,
            spec,
            identity,
            (&scope, &[]),
            validate,
            needs_unsealed,
        )
        .await
    }

    /// [`Shared::admit`] past authentication, for a caller whose identity is already known: an
    /// authenticated transport call, or a proxy route acting under its own identity
    /// (`route:<name>`, see `proxy/`). The scope and every one in `more` must be granted (a
    /// proxied request may touch several templates); the first one's grant is the call's.
    pub(crate) async fn admit_as(
        self: &Arc<Self>,
        meta: &Incoming,
        spec: Spec,
        identity: Identity,
        (scope, more): (&Scope, &[Scope]),
        validate: Result<(), CallError>,
        needs_unsealed: bool,
    ) -> Result<Admitted, CallError> {
        let caller = identity.id.clone();
        // Shed instead of queueing: a full server answers at once and the client backs off.
        let permit = match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                self.metrics.shed();
                let s = CallError::resource_exhausted("server busy: too many calls in flight");
                return Err(self.refuse(&spec, &caller, None, s).await);
            }
        };
        if let Err(s) = validate {
            return Err(self.refuse(&spec, &caller, None, s).await);
        }
        let id = &spec.request_id;
        if id.len() > 128 || !id.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            let s =
                CallError::invalid_argument("request_id: at most 128 printable ASCII characters");
            let spec = Spec {
                request_id: new_request_id(),
                ..spec
            };
            return Err(self.refuse(&spec, &caller, None, s).await);
        }
        // In its own block: `Context` is not `Send` and must be gone before the next await.
        let decision = {
            let ctx = Context {
                purpose: spec.purpose.as_deref(),
                source: meta.source,
                end_user_token: meta.end_user_token.as_deref(),
                metadata: None,
            };
            let one = |scope: &Scope| match &identity.registered {
                Some(c) => {
                    let scopes: Vec<Scope> = c.scopes.iter().map(StoredScope::scope).collect();
                    self.policy.authorize_registered(
                        &caller,
                        Registered {
                            roles: &c.roles,
                            scopes: &scopes,
                        },
                        scope,
                        &ctx,
                    )
                }
                None => self.policy.authorize(&caller, scope, &ctx),
            };
            one(scope).and_then(|grant| {
                more.iter().try_for_each(|s| one(s).map(drop))?;
                Ok(grant)
            })
        };
        let grant = match decision {
            Ok(g) => g,
            Err(d) => return Err(self.refuse(&spec, &caller, None, error::denied(&d)).await),
        };
        if needs_unsealed && self.vault.is_sealed() {
            let s = CallError::failed_precondition("the vault is sealed");
            return Err(self.refuse(&spec, &caller, grant.subject(), s).await);
        }
        let margin = Duration::from_millis(self.limits.deadline_margin_ms);
        Ok(Admitted {
            spec,
            identity,
            grant,
            give_up_at: meta.deadline.map(|d| d.checked_sub(margin).unwrap_or(d)),
            recorded: AtomicBool::new(false),
            shared: Arc::clone(self),
            _permit: permit,
        })
    }

    /// Refuse a call whose message could not be read, after authenticating it like any other
    /// (an anonymous caller learns nothing about request validity): one audit event, and the
    /// error to send.
    pub(crate) async fn refuse_unreadable(
        self: &Arc<Self>,
        meta: &Incoming,
        what: Unreadable,
        why: CallError,
    ) -> CallError {
        let (spec, scope) = match what {
            Unreadable::Tokenizer(op) => (
                Spec::tokenizer(op, UNKNOWN_TEMPLATE, 0, None, None),
                Scope::new(op, UNKNOWN_TEMPLATE),
            ),
            Unreadable::Admin(op) => (Spec::admin(op.action()), op.scope()),
        };
        match self.admit(meta, spec, scope, Err(why.clone()), false).await {
            Err(e) => e,
            // Not reached: `admit` refuses a call whose validation failed.
            Ok(call) => self.fail(&call, why).await,
        }
    }

    /// Run blocking vault work on a blocking thread, under the client's deadline. On a failure
    /// the event is recorded and the status returned. Work whose deadline has passed before it
    /// starts (here, or when a blocking thread picks it up) is not done. Work that runs past the
    /// deadline may still complete in the background (a tokenize may store its records):
    /// clients retry with idempotency keys.
    pub(crate) async fn run<T, F>(&self, call: &Admitted, work: F) -> Result<T, CallError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, CallError> + Send + 'static,
    {
        if call.expired() {
            return Err(self.fail(call, CallError::DeadlineExceeded).await);
        }
        let delay = self.hooks.call_delay;
        let give_up_at = call.give_up_at;
        let (metrics, rpc) = (self.metrics.clone(), call.spec.rpc());
        let fut = async move {
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            tokio::task::spawn_blocking(move || {
                if give_up_at.is_some_and(|t| Instant::now() >= t) {
                    return Err(CallError::DeadlineExceeded);
                }
                let started = Instant::now();
                let out = work();
                metrics.work(rpc, started.elapsed());
                out
            })
            .await
            .unwrap_or_else(|_| Err(CallError::internal("internal error")))
        };
        let result = match give_up_at {
            Some(t) => tokio::time::timeout_at(t.into(), fut)
                .await
                .unwrap_or_else(|_| Err(CallError::DeadlineExceeded)),
            None => fut.await,
        };
        self.settle(call, result).await
    }

    /// Vault work that may be answered at once, on this (async) thread: `work` must not block
    /// (`Vault::try_tokenize_now` and `try_detokenize_now`: FPE calls, which take no storage
    /// and decline when a key change holds the key state). `None` when it declined (nothing
    /// was done): run the blocking version with [`Shared::run`]. Why: an FPE call takes
    /// microseconds, and the hand-off to a blocking thread and back cost more CPU than the call
    /// itself (BENCHMARKS.md, "Where the time goes").
    pub(crate) async fn now<T>(
        &self,
        call: &Admitted,
        work: impl FnOnce() -> Option<Result<T, CallError>>,
    ) -> Option<Result<T, CallError>> {
        // The test hook delays blocking work; such calls take the blocking path.
        if self.hooks.call_delay.is_some() {
            return None;
        }
        if call.expired() {
            return Some(Err(self.fail(call, CallError::DeadlineExceeded).await));
        }
        let started = Instant::now();
        let result = work()?;
        self.metrics.work(call.spec.rpc(), started.elapsed());
        Some(self.settle(call, result).await)
    }

    /// The end of vault work: a failure is recorded and becomes the status to send.
    async fn settle<T>(
        &self,
        call: &Admitted,
        result: Result<T, CallError>,
    ) -> Result<T, CallError> {
        match result {
            Ok(v) => Ok(v),
            Err(s) => {
                if s == CallError::StorageUnavailable {
                    self.storage_failed().await;
                }
                Err(self.fail(call, s).await)
            }
        }
    }

    /// A follow-up event to an admitted call that has finished (same request id, marked as a
    /// follow-up): what happened after its result was used, such as a proxy's delivery of
    /// revealed values to an upstream. Durable before it returns.
    pub(crate) async fn follow_up(
        &self,
        call: &Admitted,
        outcome: Outcome,
        detail: String,
    ) -> Result<(), CallError> {
        let caller = call.identity.id.as_str();
        let subject = call.grant.subject();
        let mut e = self.event(&call.spec, caller, subject, outcome);
        e.detail = Some(format!("{FOLLOW_UP}: {detail}"));
        self.record(&call.spec, caller, subject, e).await
    }

    /// Refuse a call that never got as far as admission (a proxy request whose caller did not
    /// authenticate, or may not use the route): one event, and the error to send.
    pub(crate) async fn refuse_unadmitted(
        &self,
        spec: &Spec,
        caller: &str,
        e: CallError,
    ) -> CallError {
        self.refuse(spec, caller, None, e).await
    }

    /// Record a failed admitted call.
    pub(crate) async fn fail(&self, call: &Admitted, s: CallError) -> CallError {
        call.recorded.store(true, Ordering::SeqCst);
        self.refuse(&call.spec, &call.identity.id, call.grant.subject(), s)
            .await
    }

    /// Record the successful end of a call. Must complete before the response is built from
    /// anything sensitive; an error means the response must not be sent (and is the status to
    /// send instead: `DEADLINE_EXCEEDED` past the deadline, `UNAVAILABLE` if the log failed).
    pub(crate) async fn finish(&self, call: &Admitted, done: Done) -> Result<(), CallError> {
        let result = self.finish_recorded(call, done).await;
        // Failures are counted where they are decided (`fail`, or below).
        if result.is_ok() {
            call.spec.observe(self, Code::Ok);
        }
        result
    }

    async fn finish_recorded(&self, call: &Admitted, done: Done) -> Result<(), CallError> {
        if call.expired() {
            return Err(self.fail(call, CallError::DeadlineExceeded).await);
        }
        let outcome = if done.failed == 0 {
            Outcome::Ok
        } else {
            Outcome::Partial {
                failed: done.failed,
            }
        };
        let mut event = self.event(&call.spec, &call.identity.id, call.grant.subject(), outcome);
        let mut versions = done.key_versions;
        versions.sort_unstable();
        versions.dedup();
        event.key_versions = versions;
        event.token_refs = done.token_refs;
        tracing::info!(
            caller = %call.identity.id,
            operation = %call.spec.operation,
            action = call.spec.action,
            template = call.spec.template.as_deref(),
            items = call.spec.items,
            failed = done.failed,
            request_id = %call.spec.request_id,
            protocol = call.spec.protocol.name(),
            "ok"
        );
        let caller = call.identity.id.as_str();
        let subject = call.grant.subject();
        call.recorded.store(true, Ordering::SeqCst);
        let counted = |e: CallError| {
            call.spec.observe(self, e.code());
            e
        };
        self.record(&call.spec, caller, subject, event)
            .await
            .map_err(counted)?;
        if call.expired() {
            // The deadline passed while the event was being written: the result is not sent,
            // and the log says so after the event that recorded it.
            let mut e = self.event(
                &call.spec,
                caller,
                subject,
                Outcome::Failed {
                    code: Code::DeadlineExceeded.name().to_owned(),
                },
            );
            e.detail = Some(format!(
                "{FOLLOW_UP}: the deadline passed while it was written; its result was not sent"
            ));
            self.record(&call.spec, caller, subject, e)
                .await
                .map_err(counted)?;
            return Err(counted(CallError::DeadlineExceeded));
        }
        Ok(())
    }
}
