//! The OPC UA companion specifications the gateway serves, as published by the OPC Foundation.
//!
//! `generated/` is written by `companion/generate.sh` (async-opcua-codegen 0.19.0 over the
//! NodeSet2 files of the npm package node-opcua-nodesets 2.185.0) and committed, so a build
//! needs neither npm nor the network; CI regenerates it and fails on any difference. It lives
//! in a crate of its own so that its ~2,000 node constructors compile once and stay cached
//! while the gateway changes.

use opcua::nodes::NodeSetImport;

// Generated code is checked against the generator (CI), not against rustfmt or clippy.
#[rustfmt::skip]
#[allow(clippy::all, clippy::pedantic, unused, non_snake_case)]
mod generated;

/// Namespace URIs, as the specifications define them.
pub mod uri {
    pub const DI: &str = "http://opcfoundation.org/UA/DI/";
    pub const IA: &str = "http://opcfoundation.org/UA/IA/";
    pub const MACHINERY: &str = "http://opcfoundation.org/UA/Machinery/";
    pub const MACHINERY_JOBS: &str = "http://opcfoundation.org/UA/Machinery/Jobs/";
    pub const ISA95_JOB_CONTROL: &str = "http://opcfoundation.org/UA/ISA95-JOBCONTROL_V2/";
    pub const ROBOTICS: &str = "http://opcfoundation.org/UA/Robotics/";
    pub const MACHINE_TOOL: &str = "http://opcfoundation.org/UA/MachineTool/";

    /// Every namespace served, dependencies first.
    pub const ALL: [&str; 7] = [
        DI,
        IA,
        MACHINERY,
        ISA95_JOB_CONTROL,
        MACHINERY_JOBS,
        ROBOTICS,
        MACHINE_TOOL,
    ];
}

/// The companion NodeSets, in the order they must be imported (a NodeSet after those it
/// depends on).
pub fn imports() -> Vec<Box<dyn NodeSetImport>> {
    vec![
        Box::new(generated::di::DiNamespace),
        Box::new(generated::ia::IaNamespace),
        Box::new(generated::machinery::MachineryNamespace),
        Box::new(generated::isa95_job_control::Isa95JobControlNamespace),
        Box::new(generated::jobs::JobsNamespace),
        Box::new(generated::robotics::RoboticsNamespace),
        Box::new(generated::machine_tool::MachineToolNamespace),
    ]
}

/// Namespace-local numeric ids of the nodes the gateway builds on (resolve the namespace index
/// from [`uri`] at run time).
pub mod ids {
    /// DI
    pub mod di {
        pub const DEVICE_SET: u32 = 5001;
        pub const COMPONENT_TYPE: u32 = 15063;
        pub const FUNCTIONAL_GROUP_TYPE: u32 = 1005;
    }
    /// Machinery
    pub mod machinery {
        /// `Objects/Machines`
        pub const MACHINES: u32 = 1001;
        pub const MACHINE_IDENTIFICATION_TYPE: u32 = 1012;
        pub const MACHINERY_ITEM_STATE_TYPE: u32 = 1002;
        pub const MACHINERY_OPERATION_MODE_TYPE: u32 = 1008;
    }
    /// Robotics
    pub mod robotics {
        pub const MOTION_DEVICE_SYSTEM_TYPE: u32 = 1002;
        pub const MOTION_DEVICE_TYPE: u32 = 1004;
        pub const AXIS_TYPE: u32 = 16601;
    }
    /// Machine Tools
    pub mod machine_tool {
        pub const MACHINE_TOOL_TYPE: u32 = 13;
        /// A part to be taken off the machine: PredictedTime, Location, PartName.
        pub const PART_UNLOAD_PROGNOSIS_TYPE: u32 = 5;
    }
}
