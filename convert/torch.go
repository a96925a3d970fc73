package convert

import (
	"errors"
	"fmt"

	"github.com/chatglm/chatglm/internal/safetext"
)

// The torch objects a state dict pickle builds, and the only globals the
// pickle reader (pickle.go) lets it name.

// TorchStorage is a storage named by a persistent id:
// ('storage', <torch.XStorage>, key, location, numel).
type TorchStorage struct {
	DType    string // F16, BF16, F32, F64, I64, ...
	Key      string // the archive/data/<key> entry
	Location string
	Numel    int64
}

// TorchTensor is a tensor rebuilt by torch._utils._rebuild_tensor_v2.
type TorchTensor struct {
	Storage       *TorchStorage
	StorageOffset int64 // in elements
	Shape         []int64
	Stride        []int64
}

// storageDTypes maps torch's legacy storage class names to dtypes.
var storageDTypes = map[string]string{
	"HalfStorage": "F16", "BFloat16Storage": "BF16", "FloatStorage": "F32",
	"DoubleStorage": "F64", "LongStorage": "I64", "IntStorage": "I32",
	"ShortStorage": "I16", "CharStorage": "I8", "ByteStorage": "U8", "BoolStorage": "BOOL",
}

type storageType struct{ dtype string }

// pickleValue describes a value read from a pickle for an error message:
// strings quoted when they hold control characters, other values by type.
func pickleValue(v any) string {
	switch x := v.(type) {
	case string:
		return safetext.Quote(x)
	case int64, bool, float64, nil:
		return fmt.Sprint(x)
	}
	return fmt.Sprintf("%T", v)
}

// resolveGlobal admits only the names a torch state dict needs.
func resolveGlobal(mod, name string) (any, error) {
	switch mod + "." + name {
	case "collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter", "builtins.dict":
		return PickleGlobal{mod, name}, nil
	}
	if mod == "torch" {
		if dt, ok := storageDTypes[name]; ok {
			return storageType{dt}, nil
		}
	}
	return nil, fmt.Errorf("refusing global %s (not a torch state dict object)", safetext.Quote(mod+"."+name))
}

func persistentLoad(pid any) (*TorchStorage, error) {
	t, ok := pid.(PickleTuple)
	if !ok || len(t) != 5 {
		return nil, fmt.Errorf("persistent id %T is not a 5-tuple", pid)
	}
	if s, _ := t[0].(string); s != "storage" {
		return nil, fmt.Errorf("persistent id kind %s, want 'storage'", pickleValue(t[0]))
	}
	st, ok := t[1].(storageType)
	if !ok {
		return nil, fmt.Errorf("persistent id storage type %T", t[1])
	}
	key, ok := t[2].(string)
	if !ok {
		return nil, fmt.Errorf("persistent id key %T", t[2])
	}
	loc, _ := t[3].(string)
	n, ok := t[4].(int64)
	if !ok || n < 0 {
		return nil, fmt.Errorf("persistent id numel %s", pickleValue(t[4]))
	}
	return &TorchStorage{DType: st.dtype, Key: key, Location: loc, Numel: n}, nil
}

func intTuple(v any, what string) ([]int64, error) {
	t, ok := v.(PickleTuple)
	if !ok {
		return nil, fmt.Errorf("%s is %T, want a tuple", what, v)
	}
	out := make([]int64, len(t))
	for i, e := range t {
		n, ok := e.(int64)
		if !ok {
			return nil, fmt.Errorf("%s[%d] is %T", what, i, e)
		}
		out[i] = n
	}
	return out, nil
}

func reduce(fn, args any) (any, error) {
	g, ok := fn.(PickleGlobal)
	if !ok {
		return nil, fmt.Errorf("calling %T", fn)
	}
	a, ok := args.(PickleTuple)
	if !ok {
		return nil, fmt.Errorf("arguments are %T, want a tuple", args)
	}
	switch g.Module + "." + g.Name {
	case "collections.OrderedDict", "builtins.dict":
		if len(a) != 0 {
			return nil, fmt.Errorf("%s with %d arguments", g.Name, len(a))
		}
		return newDict(), nil
	case "torch._utils._rebuild_parameter":
		if len(a) < 1 {
			return nil, errors.New("_rebuild_parameter without data")
		}
		if _, ok := a[0].(*TorchTensor); !ok {
			return nil, fmt.Errorf("_rebuild_parameter of %T", a[0])
		}
		return a[0], nil
	case "torch._utils._rebuild_tensor_v2":
		if len(a) < 4 {
			return nil, fmt.Errorf("_rebuild_tensor_v2 with %d arguments", len(a))
		}
		st, ok := a[0].(*TorchStorage)
		if !ok {
			return nil, fmt.Errorf("_rebuild_tensor_v2 storage is %T", a[0])
		}
		off, ok := a[1].(int64)
		if !ok || off < 0 {
			return nil, fmt.Errorf("_rebuild_tensor_v2 storage offset %s", pickleValue(a[1]))
		}
		shape, err := intTuple(a[2], "size")
		if err != nil {
			return nil, err
		}
		stride, err := intTuple(a[3], "stride")
		if err != nil {
			return nil, err
		}
		if len(stride) != len(shape) {
			return nil, fmt.Errorf("size %v and stride %v differ in length", shape, stride)
		}
		return &TorchTensor{Storage: st, StorageOffset: off, Shape: shape, Stride: stride}, nil
	}
	return nil, fmt.Errorf("cannot call %s.%s", g.Module, g.Name)
}

// StateDictTensors extracts name → tensor from an unpickled state dict.
func StateDictTensors(v any) (map[string]*TorchTensor, []string, error) {
	d, ok := v.(*PickleDict)
	if !ok {
		return nil, nil, fmt.Errorf("top-level object is %T, want a dict of tensors", v)
	}
	out := make(map[string]*TorchTensor, len(d.Keys))
	var names []string
	for _, k := range d.Keys {
		name, ok := k.(string)
		if !ok {
			return nil, nil, fmt.Errorf("state dict key %v is not a string", k)
		}
		t, ok := d.Values[k].(*TorchTensor)
		if !ok {
			return nil, nil, fmt.Errorf("state dict entry %s is %T, not a tensor", safetext.Quote(name), d.Values[k])
		}
		out[name] = t
		names = append(names, name)
	}
	return out, names, nil
}
