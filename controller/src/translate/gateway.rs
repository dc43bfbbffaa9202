//! Gateway API translation: GatewayClass, Gateway and routes into the resources of each
//! Gateway of our class.

use crate::objects::{CONTROLLER_NAME, ObjectRef, Objects};
use crate::status::Condition;

use super::Translation;

/// Translates the Gateway API objects of `objects` into `out`.
pub fn translate(objects: &Objects, out: &mut Translation) {
    for class in &objects.gateway_classes {
        if class.spec.controller_name != CONTROLLER_NAME {
            // Another implementation's class: not ours to judge.
            continue;
        }
        let generation = class.metadata.generation.unwrap_or_default();
        out.status
            .entry(ObjectRef::of("GatewayClass", &class.metadata))
            .conditions
            .push(Condition::yes(
                "Accepted",
                "Accepted",
                "handled by agentmesh",
                generation,
            ));
    }
}
