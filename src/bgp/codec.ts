// The BGP codec's public face: everything is in codec/ (one file per concern); importers keep './codec'.
export * from './codec/index';
