// A BGP session's states (RFC 4271 §8.2.2), in a module of their own: the daemon's BGP metrics name them without
// loading the session and its codec (a config without a bgp section never needs those).
export enum SessionState {
  Idle = 'Idle',
  Connect = 'Connect',
  Active = 'Active',
  OpenSent = 'OpenSent',
  OpenConfirm = 'OpenConfirm',
  Established = 'Established',
}
