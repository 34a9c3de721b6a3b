// Renders an Istio injection template offline, as istiod's injector would: Go text/template with sprig's
// functions and the injector's own helpers (written here from their documented behaviour), over template
// data read as JSON on stdin. Prints the rendered YAML on stdout; a template error exits 1 with the message.
//
// usage: render TEMPLATE_FILE... < data.json   (files after the first are more templates, as with
// inject.istio.io/templates: sidecar,xsidecar; each is rendered on its own and separated by "---")
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig" // Debian's golang-github-masterminds-sprig-dev (GOPATH mode)
)

// The fields of istiod's SidecarTemplateData that Istio's templates read, with the same names and, where
// the templates call methods on them, the same methods.
type InterceptionMode string

func (m InterceptionMode) String() string { return string(m) }

type BoolValue struct{ Value bool }

func (b *BoolValue) GetValue() bool { return b != nil && b.Value }

type TLSSettings struct{ CaCertificates string }

func (t *TLSSettings) GetCaCertificates() string {
	if t == nil {
		return ""
	}
	return t.CaCertificates
}

type Tracing struct{ TlsSettings *TLSSettings }

func (t *Tracing) GetTlsSettings() *TLSSettings {
	if t == nil {
		return nil
	}
	return t.TlsSettings
}

type ProxyConfig struct {
	InterceptionMode                InterceptionMode
	HoldApplicationUntilProxyStarts *BoolValue
	ProxyMetadata                   map[string]string
	Tracing                         *Tracing
	// The ProxyConfig in proto3 JSON, as protoToJSON prints it.
	JSON map[string]any
}

func (p *ProxyConfig) GetTracing() *Tracing { return p.Tracing }

type ContainerPort struct {
	Name          string `json:"name,omitempty"`
	ContainerPort int32  `json:"containerPort"`
	Protocol      string `json:"protocol,omitempty"`
}

type Container struct {
	Name  string
	Ports []ContainerPort
}

type PodSpec struct {
	Containers         []Container
	ServiceAccountName string
}

type ObjectMeta struct {
	Name, Namespace     string
	Labels, Annotations map[string]string
}

type TypeMeta struct{ APIVersion, Kind string }

type MeshConfig struct {
	ProxyListenPort        int32
	ProxyInboundListenPort int32
	TrustDomain            string
}

type Data struct {
	TypeMeta                 TypeMeta
	DeploymentMeta           ObjectMeta
	ObjectMeta               ObjectMeta
	Spec                     PodSpec
	ProxyConfig              *ProxyConfig
	MeshConfig               *MeshConfig
	Values                   map[string]any
	Revision                 string
	ProxyImage               string
	ProxyUID                 *int64
	ProxyGID                 *int64
	NativeSidecars           bool
	InboundTrafficPolicyMode string
	CompliancePolicy         string
}

func toJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return "{}"
	}
	return string(b)
}

func funcs() template.FuncMap {
	f := sprig.TxtFuncMap()
	f["isset"] = func(m map[string]string, key string) bool { _, ok := m[key]; return ok }
	f["annotation"] = func(meta ObjectMeta, name string, def any) string {
		if v, ok := meta.Annotations[name]; ok {
			return v
		}
		return fmt.Sprint(def)
	}
	f["valueOrDefault"] = func(v any, def any) any {
		if v == nil || v == "" {
			return def
		}
		return v
	}
	// Adds the status port to the excluded inbound ports unless it is 0 or already there.
	f["excludeInboundPort"] = func(port any, excluded string) string {
		p := strings.TrimSpace(fmt.Sprint(port))
		if p == "" || p == "0" {
			return excluded
		}
		for _, e := range strings.Split(excluded, ",") {
			if strings.TrimSpace(e) == p {
				return excluded
			}
		}
		if excluded == "" {
			return p
		}
		return excluded + "," + p
	}
	f["structToJSON"] = toJSON
	f["toJSON"] = toJSON
	f["protoToJSON"] = func(p *ProxyConfig) string { return toJSON(p.JSON) }
	f["fromJSON"] = func(s string) any {
		var v any
		if err := json.Unmarshal([]byte(s), &v); err != nil {
			return map[string]any{}
		}
		return v
	}
	// JSON is YAML: a one-line flow mapping indents safely wherever the templates put it.
	f["toYaml"] = toJSON
	f["omitNil"] = func(m map[string]any) map[string]any {
		out := map[string]any{}
		for k, v := range m {
			if v != nil {
				out[k] = v
			}
		}
		return out
	}
	f["directory"] = filepath.Dir
	f["toLower"] = strings.ToLower
	f["contains"] = func(needle, haystack string) bool { return strings.Contains(haystack, needle) }
	f["appendMultusNetwork"] = func(existing, network string) string {
		if existing == "" {
			return network
		}
		return existing + ", " + network
	}
	f["otelResourceAttributes"] = func(...any) string { return "" }
	return f
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: render TEMPLATE_FILE... < data.json")
		os.Exit(2)
	}
	var data Data
	dec := json.NewDecoder(os.Stdin)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&data); err != nil {
		fmt.Fprintln(os.Stderr, "data:", err)
		os.Exit(1)
	}
	for i, file := range os.Args[1:] {
		text, err := os.ReadFile(file)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		t, err := template.New(filepath.Base(file)).Funcs(funcs()).Option("missingkey=zero").Parse(string(text))
		if err != nil {
			fmt.Fprintln(os.Stderr, "parse:", err)
			os.Exit(1)
		}
		if i > 0 {
			fmt.Println("---")
		}
		if err := t.Execute(os.Stdout, &data); err != nil {
			fmt.Fprintln(os.Stderr, "render:", err)
			os.Exit(1)
		}
	}
}
