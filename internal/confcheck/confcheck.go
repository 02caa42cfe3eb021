package confcheck

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"
)

// Problems collects configuration errors, each naming its key, its value
// and why.
type Problems []error

// Add records that key, holding value, is wrong for the reason format
// says.
func (p *Problems) Add(key string, value any, format string, args ...any) {
	*p = append(*p, fmt.Errorf("%s: %q: %s", key, fmt.Sprint(value), fmt.Sprintf(format, args...)))
}

// Err is every problem joined, or nil.
func (p Problems) Err() error { return errors.Join(p...) }

// NewViper returns a viper with defaults registered and, when envPrefix
// is not empty, PREFIX_KEY_PATH environment variables overriding scalar
// keys (registering a key's default is what makes it overridable).
func NewViper(defaults map[string]any, envPrefix string) *viper.Viper {
	v := viper.New()
	for k, d := range defaults {
		v.SetDefault(k, d)
	}
	if envPrefix != "" {
		v.SetEnvPrefix(envPrefix)
		v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
		v.AutomaticEnv()
	}
	return v
}

// DecodeYAML reads YAML b into v and decodes the result into out
// (a pointer to a struct with mapstructure tags), refusing unknown keys
// and parsing durations from strings.
func DecodeYAML(v *viper.Viper, b []byte, out any) error {
	v.SetConfigType("yaml")
	if err := v.ReadConfig(bytes.NewReader(b)); err != nil {
		return err
	}
	return Unmarshal(v, out)
}

// Unmarshal decodes what v holds into out, as DecodeYAML does.
func Unmarshal(v *viper.Viper, out any) error {
	err := v.Unmarshal(out, func(dc *mapstructure.DecoderConfig) {
		dc.ErrorUnused = true
		dc.DecodeHook = mapstructure.StringToTimeDurationHookFunc()
	})
	return decodeError(err)
}

// decodeError rewrites mapstructure's messages ("'vips[0].port' expected
// type 'int', got unconvertible type 'string', value: 'http'") into the
// "key: reason" form where it can, and keeps them otherwise; they
// already name the key.
func decodeError(err error) error {
	var de *mapstructure.DecodeError
	if errors.As(err, &de) {
		return fmt.Errorf("%s: %w", de.Name(), de.Unwrap())
	}
	return err
}
