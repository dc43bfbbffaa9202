//! AdmissionReview v1 handling: the [`Injector`] turns a review request into its
//! response (allowed with a JSONPatch, allowed with a warning saying why nothing was
//! injected, or denied with a message naming the bad annotation), and counts each
//! outcome.
//!
//! Pure and synchronous: no I/O here ([`crate::webhook`] serves it over HTTPS).

use std::collections::BTreeMap;

use kube_core::DynamicObject;
use kube_core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube_core::response::Status;
use serde_json::Value;

use crate::inject::{Decision, InjectError, PodContext, SkipReason, inject_pod};
use crate::metrics::{DenyReason, Metrics};
use crate::settings::Settings;

/// The injector: settings plus counters, shared by the webhook and the CLI.
#[derive(Debug)]
pub struct Injector {
    settings: Settings,
    metrics: Metrics,
}

impl Injector {
    /// An injector with these settings and fresh counters.
    pub fn new(settings: Settings) -> Injector {
        Injector {
            settings,
            metrics: Metrics::default(),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The counters, to register in a Prometheus registry.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Decides and injects one pod (or pod template) given as JSON; not counted in the
    /// metrics (the CLI's path).
    pub fn inject(&self, pod: &Value, context: &PodContext) -> Result<Decision, InjectError> {
        inject_pod(pod, context, &self.settings)
    }

    /// Answers an AdmissionReview request. The namespace's labels are not looked up:
    /// the webhook's namespaceSelector has already checked them. Serialize the answer
    /// with [`to_json`] (base64 patch), or use [`Injector::review_json`] end to end.
    pub fn review(&self, review: AdmissionReview<DynamicObject>) -> AdmissionReview<DynamicObject> {
        self.review_with_namespace_labels(review, None)
    }

    /// Answers an AdmissionReview request, also checking the namespace's labels when the
    /// caller knows them (the controller has them in its cache).
    pub fn review_with_namespace_labels(
        &self,
        review: AdmissionReview<DynamicObject>,
        namespace_labels: Option<BTreeMap<String, String>>,
    ) -> AdmissionReview<DynamicObject> {
        let request: AdmissionRequest<DynamicObject> = match review.try_into() {
            Ok(request) => request,
            Err(_) => {
                self.metrics.denied(DenyReason::MalformedRequest);
                return AdmissionResponse::invalid("agentmesh: the AdmissionReview has no request")
                    .into_review();
            }
        };
        self.respond(&request, namespace_labels).into_review()
    }

    /// Answers a request body (JSON AdmissionReview) with a response body. An unreadable
    /// body gets an error, which the HTTP server reports as 400.
    pub fn review_json(&self, body: &[u8]) -> Result<Vec<u8>, serde_json::Error> {
        let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => {
                self.metrics.denied(DenyReason::MalformedRequest);
                return Err(e);
            }
        };
        to_json(&self.review(review))
    }

    fn respond(
        &self,
        request: &AdmissionRequest<DynamicObject>,
        namespace_labels: Option<BTreeMap<String, String>>,
    ) -> AdmissionResponse {
        let response = AdmissionResponse::from(request);
        // Only pods being created are injected; anything else the API server sends (a
        // misconfigured webhook rule) passes unchanged.
        let is_pod = request.kind.group.is_empty() && request.kind.kind == "Pod";
        if !is_pod || request.operation != Operation::Create || request.sub_resource.is_some() {
            return response;
        }
        let Some(object) = &request.object else {
            return self.deny(
                response,
                DenyReason::MalformedRequest,
                "the request has no pod",
            );
        };
        let pod = match serde_json::to_value(object) {
            Ok(pod) => pod,
            Err(e) => return self.deny(response, DenyReason::MalformedRequest, &e.to_string()),
        };
        let context = PodContext {
            namespace: request
                .namespace
                .clone()
                .or_else(|| object.metadata.namespace.clone())
                .unwrap_or_else(|| "default".into()),
            namespace_labels,
        };
        match inject_pod(&pod, &context, &self.settings) {
            Ok(Decision::Inject(injection)) => match response.with_patch(injection.patch) {
                Ok(mut response) => {
                    self.metrics.injected();
                    if !injection.warnings.is_empty() {
                        response.warnings = Some(
                            injection
                                .warnings
                                .iter()
                                .map(|w| format!("agentmesh: {w}"))
                                .collect(),
                        );
                    }
                    response
                }
                Err(e) => self.deny(
                    AdmissionResponse::from(request),
                    DenyReason::MalformedRequest,
                    &e.to_string(),
                ),
            },
            Ok(Decision::Skip(reason)) => {
                self.metrics.skipped(reason.label());
                let mut response = response;
                // A reinvocation of an injected pod is not news to the user.
                if !matches!(reason, SkipReason::AlreadyInjected { .. }) {
                    response.warnings = Some(vec![reason.to_string()]);
                }
                response
            }
            Err(InjectError::Annotation(e)) => {
                self.deny(response, DenyReason::InvalidAnnotation, &e.to_string())
            }
            Err(e) => self.deny(response, DenyReason::MalformedRequest, &e.to_string()),
        }
    }

    fn deny(
        &self,
        response: AdmissionResponse,
        reason: DenyReason,
        message: &str,
    ) -> AdmissionResponse {
        self.metrics.denied(reason);
        let mut response = response.deny(format!("agentmesh: {message}"));
        response.result = Status::failure(&response.result.message, "BadRequest").with_code(400);
        response
    }
}

/// An AdmissionReview as JSON, with `response.patch` as a base64 string: the form the
/// API documents (`[]byte` in Go). Serializing the kube-core type directly writes the
/// patch as an array of numbers instead.
pub fn to_json(review: &AdmissionReview<DynamicObject>) -> Result<Vec<u8>, serde_json::Error> {
    use base64::Engine as _;
    let mut value = serde_json::to_value(review)?;
    if let Some(patch) = value.get_mut("response").and_then(|r| r.get_mut("patch")) {
        let bytes: Vec<u8> = serde_json::from_value(patch.take())?;
        *patch = Value::String(base64::engine::general_purpose::STANDARD.encode(bytes));
    }
    serde_json::to_vec(&value)
}
