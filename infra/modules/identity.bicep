// Workload identities (serving, drift, pipeline, rollout) federated with the Kubernetes service accounts of every cluster,
// and their least-privilege role assignments, scoped to single blob containers and the vault:
//   serving : read models, write payload logs
//   drift   : read models (reference sample) and payload logs
//   pipeline: write models, read payload logs, read vault secrets (KFP runner credentials)
//   rollout : query managed Prometheus (canary analysis)
// Optionally a CI identity federated with GitHub Actions environments (deploy, images and retrain-and-deploy workflows)
// that may get cluster credentials, deploy into namespaces of the cluster, query managed Prometheus and push images.

@description('Prefix of the identity names.')
@minLength(3)
@maxLength(40)
param namePrefix string

@description('Azure region of the identities.')
@minLength(3)
param location string

@description('Tags applied to every resource.')
param tags object = {}

@description('OIDC issuer URLs of the clusters whose service accounts federate with the workload identities.')
@minLength(1)
param oidcIssuerUrls array

@description('Namespace of the model server and drift job.')
@minLength(1)
@maxLength(63)
param appNamespace string = 'fraud-detection'

@description('Service account of the model server (the chart\'s serviceAccount, named after the release).')
@minLength(1)
@maxLength(253)
param servingServiceAccountName string = 'fraud-detection'

@description('Service account of the drift CronJob (the chart shares the serving one unless it gets its own).')
@minLength(1)
@maxLength(253)
param driftServiceAccountName string = 'fraud-detection-drift'

@description('Service account of the in-cluster rollout step (the chart\'s rollout.serviceAccount).')
@minLength(1)
@maxLength(253)
param rolloutServiceAccountName string = 'fraud-detection-rollout'

@description('Namespace where Kubeflow Pipelines runs pipeline pods.')
@minLength(1)
@maxLength(63)
param pipelineNamespace string = 'kubeflow'

@description('Service account of the pipeline pods.')
@minLength(1)
@maxLength(253)
param pipelineServiceAccountName string = 'fraud-pipeline-runner'

@description('Name of the storage account holding the model and payload-log containers (same resource group).')
@minLength(3)
@maxLength(24)
param storageAccountName string

@description('Container of model bundles.')
@minLength(3)
@maxLength(63)
param modelsContainerName string = 'models'

@description('Container of payload logs.')
@minLength(3)
@maxLength(63)
param payloadLogsContainerName string = 'payload-logs'

@description('Name of the Key Vault (same resource group).')
@minLength(3)
@maxLength(24)
param keyVaultName string

@description('Name of the Azure Monitor workspace (same resource group) the rollout analysis queries.')
@minLength(4)
@maxLength(44)
param monitorWorkspaceName string

@description('GitHub repository (owner/name) whose workflows may deploy; empty: no CI identity.')
@maxLength(140)
param githubRepository string = ''

@description('GitHub environments of that repository trusted by the CI identity.')
param githubEnvironments array = [
  'training'
  'production'
  'images'
]

@description('Name of the AKS cluster (same resource group) the CI identity may deploy to.')
@minLength(3)
@maxLength(63)
param aksClusterName string

var roles = {
  blobReader: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1')
  blobContributor: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'ba92f5b4-2d11-453d-a403-e96b0029c9fe')
  vaultSecretsUser: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '4633458b-17de-408a-b874-0445c86b69e6')
  aksClusterUser: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '4abbcc35-e782-43d8-92c5-2d3f1bd2253f')
  aksRbacWriter: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'a7ffa36f-339b-4b5c-8bdf-e2c188b2c0eb')
  monitoringDataReader: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'b0d8363b-8ddd-447d-831f-62ca05bff136')
}

var enableCi = !empty(githubRepository)

resource account 'Microsoft.Storage/storageAccounts@2024-01-01' existing = {
  name: storageAccountName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2024-01-01' existing = {
  parent: account
  name: 'default'
}

resource modelsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2024-01-01' existing = {
  parent: blobService
  name: modelsContainerName
}

resource payloadLogsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2024-01-01' existing = {
  parent: blobService
  name: payloadLogsContainerName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource monitorWorkspace 'Microsoft.Monitor/accounts@2023-04-03' existing = {
  name: monitorWorkspaceName
}

resource cluster 'Microsoft.ContainerService/managedClusters@2025-02-01' existing = {
  name: aksClusterName
}

resource servingIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: '${namePrefix}-serving'
  location: location
  tags: tags
}

resource driftIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: '${namePrefix}-drift'
  location: location
  tags: tags
}

resource pipelineIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: '${namePrefix}-pipeline'
  location: location
  tags: tags
}

resource rolloutIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: '${namePrefix}-rollout'
  location: location
  tags: tags
}

resource ciIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = if (enableCi) {
  name: '${namePrefix}-ci'
  location: location
  tags: tags
}

// Federated credentials on one identity cannot be written concurrently: one at a time.
@batchSize(1)
resource servingFederation 'Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials@2023-01-31' = [
  for (issuer, i) in oidcIssuerUrls: {
    parent: servingIdentity
    name: 'aks-serving-${i}'
    properties: {
      issuer: issuer
      subject: 'system:serviceaccount:${appNamespace}:${servingServiceAccountName}'
      audiences: [
        'api://AzureADTokenExchange'
      ]
    }
  }
]

@batchSize(1)
resource driftFederation 'Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials@2023-01-31' = [
  for (issuer, i) in oidcIssuerUrls: {
    parent: driftIdentity
    name: 'aks-drift-${i}'
    properties: {
      issuer: issuer
      subject: 'system:serviceaccount:${appNamespace}:${driftServiceAccountName}'
      audiences: [
        'api://AzureADTokenExchange'
      ]
    }
  }
]

@batchSize(1)
resource pipelineFederation 'Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials@2023-01-31' = [
  for (issuer, i) in oidcIssuerUrls: {
    parent: pipelineIdentity
    name: 'aks-pipeline-${i}'
    properties: {
      issuer: issuer
      subject: 'system:serviceaccount:${pipelineNamespace}:${pipelineServiceAccountName}'
      audiences: [
        'api://AzureADTokenExchange'
      ]
    }
  }
]

@batchSize(1)
resource rolloutFederation 'Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials@2023-01-31' = [
  for (issuer, i) in oidcIssuerUrls: {
    parent: rolloutIdentity
    name: 'aks-rollout-${i}'
    properties: {
      issuer: issuer
      subject: 'system:serviceaccount:${appNamespace}:${rolloutServiceAccountName}'
      audiences: [
        'api://AzureADTokenExchange'
      ]
    }
  }
]

@batchSize(1)
resource ciFederation 'Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials@2023-01-31' = [
  for envName in (enableCi ? githubEnvironments : []): {
    parent: ciIdentity
    name: 'github-${envName}'
    properties: {
      issuer: 'https://token.actions.githubusercontent.com'
      subject: 'repo:${githubRepository}:environment:${envName}'
      audiences: [
        'api://AzureADTokenExchange'
      ]
    }
  }
]

resource servingModelsRead 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(modelsContainer.id, servingIdentity.id, roles.blobReader)
  scope: modelsContainer
  properties: {
    principalId: servingIdentity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: roles.blobReader
  }
}

resource servingLogsWrite 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(payloadLogsContainer.id, servingIdentity.id, roles.blobContributor)
  scope: payloadLogsContainer
  properties: {
    principalId: servingIdentity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: roles.blobContributor
  }
}

resource driftModelsRead 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(modelsContainer.id, driftIdentity.id, roles.blobReader)
  scope: modelsContainer
  properties: {
    principalId: driftIdentity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: roles.blobReader
  }
}

// The drift job reads the payload log and labels and writes its Evidently reports beside them (payload-logs).
resource driftLogsWrite 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(payloadLogsContainer.id, driftIdentity.id, roles.blobContributor)
  scope: payloadLogsContainer
  properties: {
    principalId: driftIdentity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: roles.blobContributor
  }
}

resource pipelineModelsWrite 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(modelsContainer.id, pipelineIdentity.id, roles.blobContributor)
  scope: modelsContainer
  properties: {
    principalId: pipelineIdentity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: roles.blobContributor
  }
}

resource pipelineLogsRead 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(payloadLogsContainer.id, pipelineIdentity.id, roles.blobReader)
  scope: payloadLogsContainer
  properties: {
    principalId: pipelineIdentity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: roles.blobReader
  }
}

resource pipelineVaultRead 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, pipelineIdentity.id, roles.vaultSecretsUser)
  scope: vault
  properties: {
    principalId: pipelineIdentity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: roles.vaultSecretsUser
  }
}

resource rolloutMetricsRead 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(monitorWorkspace.id, rolloutIdentity.id, roles.monitoringDataReader)
  scope: monitorWorkspace
  properties: {
    principalId: rolloutIdentity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: roles.monitoringDataReader
  }
}

resource ciMetricsRead 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (enableCi) {
  name: guid(monitorWorkspace.id, '${namePrefix}-ci', roles.monitoringDataReader)
  scope: monitorWorkspace
  properties: {
    principalId: ciIdentity!.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: roles.monitoringDataReader
  }
}

resource ciClusterUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (enableCi) {
  name: guid(cluster.id, '${namePrefix}-ci', roles.aksClusterUser)
  scope: cluster
  properties: {
    principalId: ciIdentity!.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: roles.aksClusterUser
  }
}

resource ciClusterWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (enableCi) {
  name: guid(cluster.id, '${namePrefix}-ci', roles.aksRbacWriter)
  scope: cluster
  properties: {
    principalId: ciIdentity!.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: roles.aksRbacWriter
  }
}

@description('Client ID of the serving identity (service account annotation azure.workload.identity/client-id).')
output servingClientId string = servingIdentity.properties.clientId

@description('Client ID of the drift identity.')
output driftClientId string = driftIdentity.properties.clientId

@description('Principal (object) ID of the serving identity (role assignments on single secrets).')
output servingPrincipalId string = servingIdentity.properties.principalId

@description('Principal (object) ID of the drift identity.')
output driftPrincipalId string = driftIdentity.properties.principalId

@description('Client ID of the pipeline identity.')
output pipelineClientId string = pipelineIdentity.properties.clientId

@description('Client ID of the rollout identity (rollout.serviceAccount annotation).')
output rolloutClientId string = rolloutIdentity.properties.clientId

@description('Client ID of the CI identity (GitHub variable AZURE_CLIENT_ID of the retrain workflow); empty without one.')
output ciClientId string = enableCi ? ciIdentity!.properties.clientId : ''

@description('Principal (object) ID of the CI identity; empty without one.')
output ciPrincipalId string = enableCi ? ciIdentity!.properties.principalId : ''
