// Package franzgosuite pins franz-go so that its own kgo integration tests can be built
// (`go test -c github.com/twmb/franz-go/pkg/kgo`) and run through walproxy.
package franzgosuite

import _ "github.com/twmb/franz-go/pkg/kgo"
