//! The standard address space: the companion specifications (DI, IA, Machinery, Machine Tools,
//! Robotics, generated into the `fabrique-companion` crate) served as published, and every
//! machine placed where they say, next to the gateway's own `Objects/Fabrique` model.
//!
//! - [`types`] reads type definitions across the core and the gateway's address spaces;
//! - [`instances`] makes conformant instances of them;
//! - [`machines`] places each machine (`Objects/Machines`, DI `DeviceSet`);
//! - [`live`] drives the state machines and flags from the bus;
//! - [`conformance`] checks every instance against its TypeDefinition.

pub mod conformance;
pub mod instances;
pub mod live;
pub mod machines;
pub mod types;

use fabrique_adapters::TagCatalog;
use fabrique_companion::uri;
use opcua::server::address_space::AddressSpace;

pub use machines::{Bindings, MachineDecl, Namespaces};

/// Import the companion NodeSets into `space` (before the gateway's types, which extend them).
pub fn import_companions(space: &mut AddressSpace, namespaces: &mut opcua::nodes::NamespaceMap) {
    for import in fabrique_companion::imports() {
        space.import_node_set(&*import, namespaces);
    }
}

/// The namespace indexes of the structure, from `space`'s namespaces.
pub fn namespaces(space: &AddressSpace, instances: u16, types: u16) -> Option<Namespaces> {
    Some(Namespaces {
        instances,
        types,
        di: space.namespace_index(uri::DI)?,
        machinery: space.namespace_index(uri::MACHINERY)?,
        robotics: space.namespace_index(uri::ROBOTICS)?,
        machine_tool: space.namespace_index(uri::MACHINE_TOOL)?,
    })
}

/// Build the machines into `space`. `core` holds namespace 0 (the core node manager's space).
pub fn build(
    core: &AddressSpace,
    space: &mut AddressSpace,
    ns: Namespaces,
    machines: &[MachineDecl],
    catalog: &TagCatalog,
) -> Bindings {
    let mut out = instances::Instances::new(ns.instances);
    let bindings = {
        let types = types::Types::new(vec![core, &*space]);
        machines::plan(&types, ns, machines, catalog, &mut out)
    };
    let count = out.apply(space);
    tracing::debug!(nodes = count, machines = machines.len(), "standard address space built");
    bindings
}
