"""Writes Fabrique.NodeSet2.xml, the gateway's type model, next to this script.

Edit the tables below and run `python3 nodesets/generate_nodeset.py`; the Rust code refers to the
type ids 1001-1012 (server/src/opcua/address_space.rs), keep them stable.
"""
from xml.sax.saxutils import escape

import os

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "Fabrique.NodeSet2.xml")
M, O = "i=78", "i=80"  # ModellingRule Mandatory / Optional

TYPES = [
    (1001, "SiteType", "Site", "The mobile mini-factory (the truck) at a tour stop: line, stations, orders, indicators and visits."),
    (1002, "LineType", "Line", "The 9-step production line that turns an order into a personalised smartphone holder."),
    (1003, "ProductionStepType", "Production step", "One step of the production route: what it does, its state, the order it holds and its counters."),
    (1004, "StationType", "Station", "A station around the line, holding the devices connected to the gateway."),
    (1005, "DeviceType", "Device", "One machine or device connected to the gateway through an adapter."),
    (1006, "OrderType", "Order", "One personalised order (smartphone holder): model, text, progress and verdict."),
    (1007, "IndicatorsType", "Indicators", "Production indicators of the line (OEE, throughput...)."),
    (1008, "VisitsType", "Visits", "Visits to the truck and the post-visit survey."),
    (1009, "DeviceStatusType", "Device status", "Communication status of a device as seen by its adapter."),
    (1010, "OrdersType", "Orders", "Folder-like object holding the recent orders."),
    (1011, "StopType", "Stop", "The current tour stop: town, venue and dates."),
    (1012, "SurveyType", "Survey", "Post-visit survey figures, computed from the stored responses."),
    (1013, "MachineType", "Machine", "A machine of the line or of a partner that no more specific companion specification describes (Machinery's machine, with DI's component nameplate): found under Objects/Machines."),
    (1014, "FieldDeviceType", "Field device", "A partner device that is not a machine (a sensor, a drive, a controller), shown in DI's DeviceSet."),
    (1015, "KioskType", "Kiosk", "The reception kiosk where visitors scan their design's code to launch it as an order: a device (DI's nameplate) run by the gateway itself, with its scan counters."),
]

# Supertypes other than BaseObjectType (i=58): the gateway's types extend the companion
# specifications' where one fits. ns=2 is DI (see NamespaceUris below).
SUPERTYPES = {
    1005: "ns=2;i=15063",  # DeviceType: DI ComponentType (a component with a nameplate)
    1013: "ns=2;i=15063",  # MachineType: DI ComponentType
    1014: "ns=2;i=1002",   # FieldDeviceType: DI DeviceType
    1015: "ns=2;i=1002",   # KioskType: DI DeviceType
}

# Reference types (ns=1;i=4001..): (id, browse name, inverse name, description).
REFERENCE_TYPES = [
    (4001, "PerformedBy", "Performs", "From a production step to a machine that performs it; the inverse leads from the machine back to its steps."),
]

# (id, parent id, ref type, browse name, data type, rule, description, extra)
# ref: "P" = HasProperty/PropertyType, "V" = HasComponent/BaseDataVariableType,
#      "A" = HasComponent/AnalogItemType, "O" = HasComponent object (extra = type definition)
DECLS = [
    # SiteType 1001 -> 2001..
    (2001, 1001, "P", "Name", "String", M, "Name of the site, e.g. the truck's name."),
    # LineType 1002 -> 2051..
    (2051, 1002, "V", "State", "String", M, "Running or Stopped."),
    (2052, 1002, "V", "Mode", "String", M, "Where orders and timings come from, e.g. Simulation."),
    (2053, 1002, "V", "Models", "String", M, "Models that can be ordered.", {"array": True}),
    (2054, 1002, "V", "OrdersQueued", "UInt32", O, "Orders waiting for step 1."),
    (2055, 1002, "V", "OrdersInProgress", "UInt32", O, "Orders on the line."),
    (2056, 1002, "V", "PartsDelivered", "UInt32", O, "Parts delivered since start."),
    (2057, 1002, "V", "PartsScrapped", "UInt32", O, "Parts scrapped at metrology since start."),
    # ProductionStepType 1003 -> 2101..
    (2101, 1003, "P", "Number", "UInt16", M, "Position of the step on the route (1 to 9)."),
    (2102, 1003, "P", "Name", "String", M, "What happens at this step."),
    (2103, 1003, "V", "State", "String", M, "Idle, Busy or Blocked."),
    (2104, 1003, "V", "CurrentOrder", "String", M, "Id of the order at this step, empty when idle."),
    (2105, 1003, "A", "Progress", "Double", M, "Progress of the current order through this step, in percent.",
     {"unit": (20529, "%", "percent"), "range": (0.0, 100.0), "eu_ids": (2106, 2107)}),
    (2108, 1003, "A", "LastCycleTime", "Double", M, "Duration of the last completed cycle, in seconds.",
     {"unit": (5457219, "s", "second"), "range": None, "eu_ids": (2109, 2110)}),
    (2111, 1003, "V", "Count", "UInt32", M, "Orders completed at this step."),
    # DeviceType 1005 -> 2201..
    (2201, 1005, "P", "Manufacturer", "String", M, "Manufacturer of the device."),
    (2202, 1005, "P", "Model", "String", M, "Model of the device."),
    (2203, 1005, "P", "SerialNumber", "String", M, "Serial number of the device."),
    (2204, 1005, "P", "Protocol", "String", M, "Protocol the adapter uses to talk to the device."),
    (2205, 1005, "O", "Status", None, M, "Communication status of this device.", {"typedef": "ns=1;i=1009"}),
    (2206, 2205, "V", "Connected", "Boolean", M, "True while the adapter is connected to the device."),
    (2207, 2205, "V", "LastError", "String", M, "Last communication error, empty if none."),
    (2208, 2205, "V", "Reconnects", "UInt32", M, "Number of reconnections since start."),
    (2209, 2205, "V", "LastReadTime", "DateTime", M, "When the device was last read successfully."),
    (2210, 2205, "V", "RequestsOk", "UInt64", M, "Requests the device answered since start."),
    (2211, 2205, "V", "RequestsFailed", "UInt64", M, "Requests that failed or timed out since start."),
    # OrderType 1006 -> 2251..
    (2251, 1006, "V", "Id", "String", M, "Order id, empty while the slot is unused."),
    (2252, 1006, "V", "Model", "String", M, "Model ordered."),
    (2253, 1006, "V", "Text", "String", M, "Personalisation text."),
    (2254, 1006, "V", "State", "String", M, "Empty, Queued, InProgress, Delivered or Scrapped."),
    (2255, 1006, "V", "Verdict", "String", M, "Metrology verdict: OK, NOK or empty."),
    (2256, 1006, "V", "Step", "UInt16", M, "Current step, 0 while queued."),
    (2257, 1006, "V", "SubmittedAt", "DateTime", M, "When the order was placed."),
    (2258, 1006, "V", "CompletedAt", "DateTime", M, "When the order was delivered or scrapped."),
    # DeviceStatusType 1009 -> 2401..
    (2401, 1009, "V", "Connected", "Boolean", M, "True while the adapter is connected to the device."),
    (2402, 1009, "V", "LastError", "String", M, "Last communication error, empty if none."),
    (2403, 1009, "V", "Reconnects", "UInt32", M, "Number of reconnections since start."),
    (2404, 1009, "V", "LastReadTime", "DateTime", M, "When the device was last read successfully."),
    (2405, 1009, "V", "RequestsOk", "UInt64", M, "Requests the device answered since start."),
    (2406, 1009, "V", "RequestsFailed", "UInt64", M, "Requests that failed or timed out since start."),
    # VisitsType 1008 -> 2351..
    (2351, 1008, "V", "VisitorsTotal", "UInt64", M, "Visitors checked in, all stops."),
    (2352, 1008, "V", "VisitorsAtStop", "UInt64", M, "Visitors checked in at the current stop."),
    (2353, 1008, "V", "VisitorsToday", "UInt64", M, "Visitors checked in today (UTC day)."),
    (2354, 1008, "V", "GroupsTotal", "UInt64", M, "Groups checked in, all stops."),
    (2355, 1008, "O", "Survey", None, M, "Post-visit survey figures.", {"typedef": "ns=1;i=1012"}),
    # SurveyType 1012 -> 2551..
    (2551, 1012, "V", "Responses", "UInt64", M, "Survey responses, all stops."),
    (2552, 1012, "A", "SatisfiedPct", "Double", M, "Share of responses satisfied or very satisfied (satisfaction 3 or 4), all stops, in percent.",
     {"unit": (20529, "%", "percent"), "range": (0.0, 100.0), "eu_ids": (2553, 2554)}),
    (2555, 1012, "A", "ViewChangedPct", "Double", M, "Share of responses whose view of industrial jobs changed, all stops, in percent.",
     {"unit": (20529, "%", "percent"), "range": (0.0, 100.0), "eu_ids": (2556, 2557)}),
    (2558, 1012, "V", "ResponsesAtStop", "UInt64", M, "Survey responses at the current stop."),
    (2559, 1012, "V", "Rejected", "UInt64", M, "Invalid responses refused since start."),
    # KioskType 1015 -> 2701..
    (2701, 1015, "V", "Scans", "UInt64", M, "Codes scanned since start."),
    (2702, 1015, "V", "Launched", "UInt64", M, "Scans that launched an order since start."),
    (2703, 1015, "V", "Rejected", "UInt64", M, "Scans refused since start (unknown, expired or already launched code, line stopped)."),
    (2704, 1015, "V", "LastScan", "DateTime", M, "When the last code was scanned."),
    (2705, 1015, "V", "LastCode", "String", O, "The last code scanned, as read."),
    (2706, 1015, "V", "LastResult", "String", O, "Order id launched by the last scan, or why it was refused."),
    (2707, 1015, "V", "DesignsCreated", "UInt64", O, "Designs stored since start."),
    (2708, 1015, "V", "DesignsRefused", "UInt64", O, "Designs and class uploads refused since start."),
    # StopType 1011 -> 2501..
    (2501, 1011, "V", "Town", "String", M, "Town of the stop."),
    (2502, 1011, "V", "Venue", "String", M, "Venue where the truck is parked."),
    (2503, 1011, "V", "FirstDay", "String", M, "First day of the stop, ISO 8601 date (YYYY-MM-DD)."),
    (2504, 1011, "V", "LastDay", "String", M, "Last day of the stop, ISO 8601 date (YYYY-MM-DD)."),
]

UNECE = "http://www.opcfoundation.org/UA/units/un/cefact"
L = []
w = L.append

w('<?xml version="1.0" encoding="utf-8"?>')
w('<!-- Fabrique Gateway information model: types only, no instances. -->')
w('<UANodeSet xmlns="http://opcfoundation.org/UA/2011/03/UANodeSet.xsd"'
  ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
  ' xmlns:xsd="http://www.w3.org/2001/XMLSchema"'
  ' xmlns:uax="http://opcfoundation.org/UA/2008/02/Types.xsd"'
  ' LastModified="2026-11-22T00:00:00Z">')
w('  <NamespaceUris>')
w('    <Uri>urn:fabrique-gateway:types</Uri>')
w('    <Uri>http://opcfoundation.org/UA/DI/</Uri>')
w('  </NamespaceUris>')
w('  <Models>')
w('    <Model ModelUri="urn:fabrique-gateway:types" Version="0.1.0" PublicationDate="2026-11-22T00:00:00Z">')
w('      <RequiredModel ModelUri="http://opcfoundation.org/UA/" Version="1.05.03" PublicationDate="2023-12-15T00:00:00Z"/>')
w('      <RequiredModel ModelUri="http://opcfoundation.org/UA/DI/" Version="1.05.0" PublicationDate="2025-11-15T00:00:00Z"/>')
w('    </Model>')
w('  </Models>')
w('  <Aliases>')
for a, i in [("Boolean", 1), ("UInt16", 5), ("UInt32", 7), ("UInt64", 9), ("Double", 11), ("String", 12), ("DateTime", 13),
             ("Range", 884), ("EUInformation", 887),
             ("Organizes", 35), ("HasModellingRule", 37), ("HasTypeDefinition", 40), ("HasSubtype", 45),
             ("HasProperty", 46), ("HasComponent", 47), ("NonHierarchicalReferences", 32)]:
    w(f'    <Alias Alias="{a}">i={i}</Alias>')
w('  </Aliases>')

# Standard properties overriding AnalogItemType's declarations keep their namespace-0 browse names.
NS0_NAMES = {"EURange", "EngineeringUnits"}

def head(kind, nid, bname, disp, desc, attrs="", parent=None):
    p = f' ParentNodeId="ns=1;i={parent}"' if parent else ""
    qn = bname if bname in NS0_NAMES else f"1:{bname}"
    w(f'  <{kind} NodeId="ns=1;i={nid}" BrowseName="{qn}"{p}{attrs}>')
    w(f'    <DisplayName>{escape(disp)}</DisplayName>')
    w(f'    <Description>{escape(desc)}</Description>')

w('')
w('  <!-- ObjectTypes (ns=1;i=1001..1015): subtypes of BaseObjectType or of DI\'s (SUPERTYPES). -->')
for nid, bname, disp, desc in TYPES:
    head("UAObjectType", nid, bname, bname, desc)
    w('    <References>')
    w(f'      <Reference ReferenceType="HasSubtype" IsForward="false">{SUPERTYPES.get(nid, "i=58")}</Reference>')
    for d in DECLS:
        if d[1] == nid:
            ref = "HasProperty" if d[2] == "P" else "HasComponent"
            w(f'      <Reference ReferenceType="{ref}">ns=1;i={d[0]}</Reference>')
    w('    </References>')
    w('  </UAObjectType>')

w('')
w('  <!-- ReferenceTypes (ns=1;i=4001..). -->')
for nid, bname, inverse, desc in REFERENCE_TYPES:
    head("UAReferenceType", nid, bname, bname, desc)
    w('    <References>')
    w('      <Reference ReferenceType="HasSubtype" IsForward="false">NonHierarchicalReferences</Reference>')
    w('    </References>')
    w(f'    <InverseName>{inverse}</InverseName>')
    w('  </UAReferenceType>')

def variable(nid, parent, ref, bname, dtype, rule, desc, typedef, value=None, array=False, children=()):
    attrs = f' DataType="{dtype}"'
    attrs += ' ValueRank="1" ArrayDimensions="0"' if array else ' ValueRank="-1"'
    attrs += ' AccessLevel="1"'
    head("UAVariable", nid, bname, bname, desc, attrs, parent)
    w('    <References>')
    w(f'      <Reference ReferenceType="HasTypeDefinition">{typedef}</Reference>')
    w(f'      <Reference ReferenceType="HasModellingRule">{rule}</Reference>')
    w(f'      <Reference ReferenceType="{ref}" IsForward="false">ns=1;i={parent}</Reference>')
    for cid in children:
        w(f'      <Reference ReferenceType="HasProperty">ns=1;i={cid}</Reference>')
    w('    </References>')
    if value:
        w('    <Value>')
        for line in value:
            w('      ' + line)
        w('    </Value>')
    w('  </UAVariable>')

w('')
w('  <!-- Instance declarations (ns=1;i=2000..2999): type 10NN owns the block starting at 2001 + 50*(NN-1). -->')
for d in DECLS:
    nid, parent, kind, bname, dtype, rule, desc = d[:7]
    extra = d[7] if len(d) > 7 else {}
    if kind == "P":
        variable(nid, parent, "HasProperty", bname, dtype, rule, desc, "i=68")
    elif kind == "V":
        variable(nid, parent, "HasComponent", bname, dtype, rule, desc, "i=63", array=extra.get("array", False))
    elif kind == "O":
        head("UAObject", nid, bname, bname, desc, "", parent)
        w('    <References>')
        w(f'      <Reference ReferenceType="HasTypeDefinition">{extra["typedef"]}</Reference>')
        w(f'      <Reference ReferenceType="HasModellingRule">{rule}</Reference>')
        w(f'      <Reference ReferenceType="HasComponent" IsForward="false">ns=1;i={parent}</Reference>')
        for c in DECLS:
            if c[1] == nid:
                w(f'      <Reference ReferenceType="HasComponent">ns=1;i={c[0]}</Reference>')
        w('    </References>')
        w('  </UAObject>')
    elif kind == "A":
        r_id, u_id = extra["eu_ids"]
        variable(nid, parent, "HasComponent", bname, dtype, rule, desc, "i=2368", children=(r_id, u_id))
        rng = extra["range"]
        rv = None
        if rng:
            rv = ['<uax:ExtensionObject>',
                  '  <uax:TypeId><uax:Identifier>i=885</uax:Identifier></uax:TypeId>',
                  '  <uax:Body>',
                  f'    <uax:Range><uax:Low>{rng[0]}</uax:Low><uax:High>{rng[1]}</uax:High></uax:Range>',
                  '  </uax:Body>',
                  '</uax:ExtensionObject>']
        variable(r_id, nid, "HasProperty", "EURange", "Range", M,
                 f"Normal range of {bname}" + (f": {rng[0]:g} to {rng[1]:g} {extra['unit'][1]}." if rng else "; set by the server, not fixed by the type."),
                 "i=68", value=rv)
        uid, sym, uname = extra["unit"]
        uv = ['<uax:ExtensionObject>',
              '  <uax:TypeId><uax:Identifier>i=888</uax:Identifier></uax:TypeId>',
              '  <uax:Body>',
              '    <uax:EUInformation>',
              f'      <uax:NamespaceUri>{UNECE}</uax:NamespaceUri>',
              f'      <uax:UnitId>{uid}</uax:UnitId>',
              f'      <uax:DisplayName><uax:Locale>en</uax:Locale><uax:Text>{escape(sym)}</uax:Text></uax:DisplayName>',
              f'      <uax:Description><uax:Locale>en</uax:Locale><uax:Text>{uname}</uax:Text></uax:Description>',
              '    </uax:EUInformation>',
              '  </uax:Body>',
              '</uax:ExtensionObject>']
        variable(u_id, nid, "HasProperty", "EngineeringUnits", "EUInformation", M,
                 f"Engineering unit of {bname}: {uname} ({sym}), UNECE code.", "i=68", value=uv)
# Event types (ns=1;i=5001..5005), subtypes of BaseEventType (i=2041), each with its fields as
# mandatory properties (5101..). The event emitter (server/src/opcua/events.rs) uses these ids.
EVENT_TYPES = [
    (5001, "OrderSubmittedEventType", "An order was submitted (kiosk, OPC UA, HTTP or MQTT).",
     [(5101, "OrderId", "String", "The order's id.")]),
    (5002, "OrderDeliveredEventType", "An order left packaging: the visitor's part is ready.",
     [(5111, "OrderId", "String", "The order's id.")]),
    (5003, "PartScrappedEventType", "Metrology found a part out of tolerance; it was scrapped.",
     [(5121, "OrderId", "String", "The order's id."),
      (5122, "Verdict", "String", "The metrology verdict.")]),
    (5004, "DeviceConnectionEventType", "The gateway lost or regained a device.",
     [(5131, "Connected", "Boolean", "True when the connection was restored, false when it was lost."),
      (5132, "Error", "String", "The last communication error, empty when none."),
      (5133, "Device", "String", "The device's path, Stations/station/device.")]),
    (5005, "StopChangedEventType", "The truck's tour stop changed.",
     [(5141, "Town", "String", "The new stop's town.")]),
]
w("")
w("  <!-- Event types (ns=1;i=5001..5005), subtypes of BaseEventType; their fields 5101.. -->")
for tid, tname, tdesc, fields in EVENT_TYPES:
    w(f'  <UAObjectType NodeId="ns=1;i={tid}" BrowseName="1:{tname}">')
    w(f'    <DisplayName>{tname}</DisplayName>')
    w(f'    <Description>{escape(tdesc)}</Description>')
    w('    <References>')
    w('      <Reference ReferenceType="HasSubtype" IsForward="false">i=2041</Reference>')
    for fid, *_ in fields:
        w(f'      <Reference ReferenceType="HasProperty">ns=1;i={fid}</Reference>')
    w('    </References>')
    w('  </UAObjectType>')
    for fid, fname, ftype, fdesc in fields:
        w(f'  <UAVariable NodeId="ns=1;i={fid}" BrowseName="1:{fname}" ParentNodeId="ns=1;i={tid}" DataType="{ftype}" ValueRank="-1" AccessLevel="1">')
        w(f'    <DisplayName>{fname}</DisplayName>')
        w(f'    <Description>{escape(fdesc)}</Description>')
        w('    <References>')
        w('      <Reference ReferenceType="HasTypeDefinition">i=68</Reference>')
        w('      <Reference ReferenceType="HasModellingRule">i=78</Reference>')
        w(f'      <Reference ReferenceType="HasProperty" IsForward="false">ns=1;i={tid}</Reference>')
        w('    </References>')
        w('  </UAVariable>')
w('</UANodeSet>')

with open(OUT, "w", encoding="utf-8", newline="\n") as f:
    f.write("\n".join(L) + "\n")
print("wrote", OUT, len(L), "lines")
