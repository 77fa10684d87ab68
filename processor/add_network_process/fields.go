package add_network_process

import _ "embed"

// fieldsYML is _meta/fields.yml, embedded so that a beat can register it
// with libbeat's asset.FieldsRegistry and so its index template maps every
// field the processor writes.
//
//go:embed _meta/fields.yml
var fieldsYML string

// FieldsYML returns the processor's fields.yml (libbeat's fields format):
// the source.process.* and destination.process.* fields with their ECS
// types. A beat that compiles the processor in registers it under its own
// name, for example:
//
//	asset.SetFields(beatName, add_network_process.FieldsAssetName, asset.ModuleFieldsPri,
//		func() string { s, _ := asset.EncodeData(add_network_process.FieldsYML()); return s })
func FieldsYML() string { return fieldsYML }

// FieldsAssetName is the name under which FieldsYML is registered.
const FieldsAssetName = "processors/add_network_process"
