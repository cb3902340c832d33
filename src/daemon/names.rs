//! Resource names as the Admin API spells them (`projects/{p}/locations/{l}/services/{s}`
//! and below), parsed and checked once, at the door, into typed names. Any project and
//! location strings are accepted and kept; service ids follow Cloud Run's rules.

use std::fmt;

use tonic::Status;

/// `projects/{project}/locations/{location}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Parent {
    pub project: String,
    pub location: String,
}

/// `{parent}/services/{service}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceName {
    pub parent: Parent,
    pub service: String,
}

/// `{service name}/revisions/{revision}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevisionName {
    pub service: ServiceName,
    pub revision: String,
}

/// `{parent}/operations/{id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationName {
    pub parent: Parent,
    pub id: String,
}

impl fmt::Display for Parent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "projects/{}/locations/{}", self.project, self.location)
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/services/{}", self.parent, self.service)
    }
}

impl fmt::Display for RevisionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/revisions/{}", self.service, self.revision)
    }
}

impl fmt::Display for OperationName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/operations/{}", self.parent, self.id)
    }
}

fn invalid(field: &str, value: &str, want: &str) -> Status {
    Status::invalid_argument(format!("invalid {field} {value:?}: expected {want}"))
}

/// A path segment: non-empty, no `/`.
fn segment(s: &str) -> bool {
    !s.is_empty() && !s.contains('/')
}

impl Parent {
    /// Parses `projects/P/locations/L`; `field` names the request field in the error.
    pub fn parse(field: &str, s: &str) -> Result<Parent, Status> {
        let want = "projects/{project}/locations/{location}";
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            ["projects", p, "locations", l] if segment(p) && segment(l) => Ok(Parent {
                project: p.to_string(),
                location: l.to_string(),
            }),
            _ => Err(invalid(field, s, want)),
        }
    }
}

impl ServiceName {
    /// Parses `projects/P/locations/L/services/S`, checking S by Cloud Run's rules.
    pub fn parse(field: &str, s: &str) -> Result<ServiceName, Status> {
        let want = "projects/{project}/locations/{location}/services/{service}";
        let (parent, service) = s
            .rsplit_once("/services/")
            .ok_or_else(|| invalid(field, s, want))?;
        let parent = Parent::parse(field, parent).map_err(|_| invalid(field, s, want))?;
        check_service_id(service)?;
        Ok(ServiceName {
            parent,
            service: service.to_string(),
        })
    }

    /// Like [`parse`](Self::parse), but the service may be `-` (every service).
    pub fn parse_or_any(field: &str, s: &str) -> Result<ServiceName, Status> {
        match s.strip_suffix("/services/-") {
            Some(parent) => Ok(ServiceName {
                parent: Parent::parse(field, parent)?,
                service: "-".into(),
            }),
            None => Self::parse(field, s),
        }
    }

    pub fn is_any(&self) -> bool {
        self.service == "-"
    }
}

impl RevisionName {
    pub fn parse(field: &str, s: &str) -> Result<RevisionName, Status> {
        let want =
            "projects/{project}/locations/{location}/services/{service}/revisions/{revision}";
        let (service, revision) = s
            .rsplit_once("/revisions/")
            .ok_or_else(|| invalid(field, s, want))?;
        let service =
            ServiceName::parse_or_any(field, service).map_err(|_| invalid(field, s, want))?;
        if !segment(revision) {
            return Err(invalid(field, s, want));
        }
        Ok(RevisionName {
            service,
            revision: revision.to_string(),
        })
    }
}

impl OperationName {
    pub fn parse(field: &str, s: &str) -> Result<OperationName, Status> {
        let want = "projects/{project}/locations/{location}/operations/{operation}";
        let (parent, id) = s
            .rsplit_once("/operations/")
            .ok_or_else(|| invalid(field, s, want))?;
        let parent = Parent::parse(field, parent).map_err(|_| invalid(field, s, want))?;
        if !segment(id) {
            return Err(invalid(field, s, want));
        }
        Ok(OperationName {
            parent,
            id: id.to_string(),
        })
    }
}

/// `{parent}/jobs/{job}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobName {
    pub parent: Parent,
    pub job: String,
}

/// `{job name}/executions/{execution}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionName {
    pub job: JobName,
    pub execution: String,
}

/// `{execution name}/tasks/{task}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskName {
    pub execution: ExecutionName,
    pub task: String,
}

impl fmt::Display for JobName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/jobs/{}", self.parent, self.job)
    }
}

impl fmt::Display for ExecutionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/executions/{}", self.job, self.execution)
    }
}

impl fmt::Display for TaskName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/tasks/{}", self.execution, self.task)
    }
}

impl JobName {
    /// Parses `projects/P/locations/L/jobs/J`, checking J as a job id.
    pub fn parse(field: &str, s: &str) -> Result<JobName, Status> {
        let want = "projects/{project}/locations/{location}/jobs/{job}";
        let (parent, job) = s
            .rsplit_once("/jobs/")
            .ok_or_else(|| invalid(field, s, want))?;
        let parent = Parent::parse(field, parent).map_err(|_| invalid(field, s, want))?;
        check_job_id(job)?;
        Ok(JobName {
            parent,
            job: job.to_string(),
        })
    }

    /// Like [`parse`](Self::parse), but the job may be `-` (every job).
    pub fn parse_or_any(field: &str, s: &str) -> Result<JobName, Status> {
        match s.strip_suffix("/jobs/-") {
            Some(parent) => Ok(JobName {
                parent: Parent::parse(field, parent)?,
                job: "-".into(),
            }),
            None => Self::parse(field, s),
        }
    }

    pub fn is_any(&self) -> bool {
        self.job == "-"
    }
}

impl ExecutionName {
    pub fn parse(field: &str, s: &str) -> Result<ExecutionName, Status> {
        let want = "projects/{project}/locations/{location}/jobs/{job}/executions/{execution}";
        let (job, execution) = s
            .rsplit_once("/executions/")
            .ok_or_else(|| invalid(field, s, want))?;
        let job = JobName::parse_or_any(field, job).map_err(|_| invalid(field, s, want))?;
        if !segment(execution) {
            return Err(invalid(field, s, want));
        }
        Ok(ExecutionName {
            job,
            execution: execution.to_string(),
        })
    }
}

impl TaskName {
    pub fn parse(field: &str, s: &str) -> Result<TaskName, Status> {
        let want =
            "projects/{project}/locations/{location}/jobs/{job}/executions/{execution}/tasks/{task}";
        let (execution, task) = s
            .rsplit_once("/tasks/")
            .ok_or_else(|| invalid(field, s, want))?;
        let execution =
            ExecutionName::parse(field, execution).map_err(|_| invalid(field, s, want))?;
        if !segment(task) {
            return Err(invalid(field, s, want));
        }
        Ok(TaskName {
            execution,
            task: task.to_string(),
        })
    }
}

/// A job id: a name as for services, short enough that its executions' task containers
/// get ids containerd accepts.
pub fn check_job_id(id: &str) -> Result<(), Status> {
    crate::spec::check_name("job_id", id, crate::control::job::spec::MAX_NAME)
        .map(|_| ())
        .map_err(|e| Status::invalid_argument(e.to_string()))
}

/// Cloud Run's rule for a service id: lowercase letters, digits and hyphens, starting with a
/// letter, not ending with a hyphen, under 50 characters.
pub fn check_service_id(id: &str) -> Result<(), Status> {
    crate::spec::check_name("service_id", id, 49)
        .map(|_| ())
        .map_err(|e| Status::invalid_argument(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents() {
        let p = Parent::parse("parent", "projects/p-1/locations/us-central1").unwrap();
        assert_eq!(
            (p.project.as_str(), p.location.as_str()),
            ("p-1", "us-central1")
        );
        assert_eq!(p.to_string(), "projects/p-1/locations/us-central1");
        for bad in [
            "",
            "projects/p",
            "projects//locations/l",
            "projects/p/locations/l/x",
            "p/x/locations/l",
        ] {
            let e = Parent::parse("parent", bad).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad}");
            assert!(e.message().contains("parent"), "{}", e.message());
        }
    }

    #[test]
    fn services_revisions_operations() {
        let table = [
            ("projects/p/locations/l/services/hello", true),
            ("projects/p/locations/l/services/Hello", false),
            ("projects/p/locations/l/services/1x", false),
            ("projects/p/locations/l/services/x-", false),
            ("projects/p/locations/l/services/", false),
            ("projects/p/locations/l/hello", false),
        ];
        for (s, ok) in table {
            assert_eq!(ServiceName::parse("name", s).is_ok(), ok, "{s}");
        }
        let n = ServiceName::parse("name", "projects/p/locations/l/services/hello").unwrap();
        assert_eq!(n.to_string(), "projects/p/locations/l/services/hello");
        assert!(
            ServiceName::parse_or_any("parent", "projects/p/locations/l/services/-")
                .unwrap()
                .is_any()
        );
        let r = RevisionName::parse(
            "name",
            "projects/p/locations/l/services/hello/revisions/hello-00001-abc",
        )
        .unwrap();
        assert_eq!(r.revision, "hello-00001-abc");
        assert_eq!(
            r.to_string(),
            "projects/p/locations/l/services/hello/revisions/hello-00001-abc"
        );
        assert!(
            RevisionName::parse("name", "projects/p/locations/l/services/hello/revisions/")
                .is_err()
        );
        let o = OperationName::parse("name", "projects/p/locations/l/operations/abc").unwrap();
        assert_eq!(o.id, "abc");
        assert!(OperationName::parse("name", "projects/p/locations/l/operations").is_err());
    }

    #[test]
    fn jobs_executions_tasks() {
        let t = TaskName::parse(
            "name",
            "projects/p/locations/l/jobs/hello/executions/hello-abcde/tasks/hello-abcde-task0",
        )
        .unwrap();
        assert_eq!(t.execution.job.job, "hello");
        assert_eq!(t.execution.execution, "hello-abcde");
        assert_eq!(t.task, "hello-abcde-task0");
        assert_eq!(
            t.execution.to_string(),
            "projects/p/locations/l/jobs/hello/executions/hello-abcde"
        );
        assert!(JobName::parse("name", "projects/p/locations/l/jobs/Hello").is_err());
        assert!(JobName::parse("name", "projects/p/locations/l/jobs/").is_err());
        assert!(
            JobName::parse_or_any("parent", "projects/p/locations/l/jobs/-")
                .unwrap()
                .is_any()
        );
        assert!(
            ExecutionName::parse("name", "projects/p/locations/l/jobs/hello/executions/").is_err()
        );
    }
}
